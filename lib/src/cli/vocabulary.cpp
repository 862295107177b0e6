#include "cellstate/cli/vocabulary.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace cellstate {

namespace {

std::vector<VocabularyEntry> make_vocabulary() {
  const bool kFlag = true, kValue = false;
  std::vector<VocabularyEntry> v = {
      // Every command.
      {"help", kFlag, "print the command's options with their defaults"},
      {"config", kValue, "read options from a JSON file (the command line wins)"},
      // Model (cli/options.h add_model_options).
      {"model", kValue, "model directory (use commands: the shipped model by default)"},
      {"impl", kValue, "recurrent implementation: custom or builtin"},
      {"rnn", kValue, "recurrent cell: lstm, gru or rnn"},
      {"layers", kValue, "stacked recurrent layers", Range{1, 64}},
      {"hidden", kValue, "hidden units per direction", Range{1, 65536}},
      {"embed", kValue, "embedding size", Range{1, 65536}},
      {"dropout", kValue, "dropout probability", Range{0, 1, false, true}},
      {"bidirectional", kFlag, "bidirectional recurrent layers"},
      {"half", kFlag, "store the weights as float16"},
      {"tie", kFlag, "the output layer shares the embeddings"},
      // Training (add_training_options).
      {"nt-asgd", kValue, "evaluations without improvement before weight averaging starts", Range{0, 1e6}},
      {"epochs", kValue, "maximum epochs", Range{1, 1e6}},
      {"batch-size", kValue, "examples (sentences, texts) per batch", Range{1, 65536}},
      {"lr", kValue, "learning rate", Range{0, 100, true, false}},
      {"optimizer", kValue, "adam, adamw or sgd"},
      {"weight-decay", kValue, "weight decay", Range{0, 10}},
      {"momentum", kValue, "SGD momentum", Range{0, 1, false, true}},
      {"clip", kValue, "gradient norm clipping", Range{0, 1e6}},
      {"lr-schedule", kValue, "learning-rate schedule"},
      {"lr-decay", kValue, "learning-rate decay factor", Range{0, 1, true, false}},
      {"lr-step", kValue, "epochs or evaluations between decays", Range{1, 1e9}},
      {"warmup", kValue, "warm-up steps", Range{0, 1e9}},
      {"min-lr", kValue, "lowest learning rate", Range{0, 100}},
      {"patience", kValue, "evaluations without improvement before stopping", Range{0, 1e6}},
      {"eval-every", kValue, "steps between evaluations", Range{0, 1e9}},
      {"seed", kValue, "random seed (training: initialisation and data order; use: sampling)"},
      {"resume", kFlag, "continue the model directory's interrupted or finished training run"},
      {"verify", kFlag, "check a model's files against its manifest when loading"},
      {"overwrite", kFlag, "replace the model already in the model directory"},
      {"max-time", kValue, "minutes of training at most", Range{0, 1e7}},
      {"checkpoint-every", kValue, "minutes between checkpoints", Range{0, 1e6}},
      {"init-from", kValue, "fine-tune: start training from this model directory (or shipped model's short name)"},
      {"freeze", kValue, "fine-tune: parameters not trained (embeddings, layers=K, or parameter-name prefixes)"},
      {"nproc", kValue, "data-parallel training processes on this machine", Range{1, 256}},
      {"dist-timeout", kValue, "seconds data-parallel ranks wait for each other", Range{0, 86400, true, false}},
      {"dist-bucket-mb", kValue, "data-parallel gradient buckets overlapping the backward pass", Range{0, 1024}},
      // Runtime (add_runtime_options).
      {"threads", kValue, "intra-op threads", Range{0, 4096}},
      {"precision", kValue, "arithmetic of the matrix products (auto, fp32, bf16, int8)"},
      {"device", kValue, "cpu or cuda"},
      {"quiet", kFlag, "no progress output on stderr"},
      // Serving (cellstate-serve).
      {"sentiment", kValue, "a sentiment model directory to serve"},
      {"ner", kValue, "an NER model directory to serve"},
      {"translate", kValue, "a translation model directory (or a shipped model's short name) to serve"},
      {"textgen", kValue, "a text generation model directory to serve"},
      {"host", kValue, "address to listen on"},
      {"port", kValue, "port to listen on (0: any free port)", Range{0, 65535}},
      {"connections", kValue, "connections served at once", Range{1, 4096}},
      {"api-key", kValue, "file holding the API key requests must send"},
      {"max-batch", kValue, "items run through a model together at most", Range{1, 4096}},
      {"max-wait-ms", kValue, "milliseconds a request waits for others to batch with", Range{0, 10000}},
      {"max-request-bytes", kValue, "largest request body accepted", Range{64, 1073741824}},
      {"request-timeout-ms", kValue, "milliseconds before an unanswered request gets 503", Range{1, 3600000}},
      // Data.
      {"train", kValue, "training data file"},
      {"dev", kValue, "dev data file (early stopping)"},
      {"valid", kValue, "dev text file (early stopping)"},
      {"valid-fraction", kValue, "share of a text's end held out as dev text", Range{0, 1, false, true}},
      {"data", kValue, "data file to evaluate or time on"},
      {"train-data", kValue, "text to time training on"},
      {"src", kValue, "source sentences file"},
      {"tgt", kValue, "target sentences file, line by line with --src"},
      {"ref", kValue, "reference translations file"},
      {"src-train", kValue, "training source sentences"},
      {"tgt-train", kValue, "training target sentences"},
      {"src-dev", kValue, "dev source sentences"},
      {"tgt-dev", kValue, "dev target sentences"},
      {"input-format", kValue, "the input's format"},
      {"data-scheme", kValue, "the data's tag scheme"},
      {"token-column", kValue, "CoNLL column of the tokens", Range{-100, 100}},
      {"tag-column", kValue, "CoNLL column of the tags", Range{-100, 100}},
      {"label-names", kValue, "names for the data's labels"},
      {"max-length", kValue, "tokens kept per text", Range{1, 1e6}},
      {"max-words", kValue, "longest training sentence kept, in words", Range{1, 10000}},
      // Output.
      {"format", kValue, "the output's format"},
      {"json", kFlag, "print the result as JSON"},
      {"output", kValue, "also write a file of per-item results"},
      {"dump-ids", kValue, "also write the token ids as JSON (for the Python peers)"},
      {"attention-weights", kFlag, "include attention weights in JSONL output"},
      {"attention-svg", kValue, "directory for attention heatmaps"},
      {"unit", kValue, "what one result is about: a line or a file"},
      {"top-k", kValue, "keep the k most probable (labels shown; tokens sampled from)", Range{0, 1e6}},
      {"threshold", kValue, "lowest probability a label is shown with", Range{0, 1}},
      {"tag-scheme", kValue, "tag scheme: bio or iobes"},
      // Generation and decoding.
      {"prompt", kValue, "text to continue"},
      {"prompt-file", kValue, "file holding the text to continue"},
      {"max-tokens", kValue, "tokens to generate at most", Range{1, 1e6}},
      {"max-prompt-tokens", kValue, "prompt tokens read at most", Range{1, 1e6}},
      {"stop", kValue, "string that ends a continuation"},
      {"greedy", kFlag, "take the most probable token instead of sampling"},
      {"sample", kFlag, "sample each token instead of searching"},
      {"num-samples", kValue, "sampled continuations per prompt", Range{1, 1000}},
      {"temperature", kValue, "sampling temperature", Range{0, 100, true, false}},
      {"top-p", kValue, "nucleus sampling mass", Range{0, 1, true, false}},
      {"repetition-penalty", kValue, "penalty on tokens already seen", Range{1, 100}},
      {"beam", kValue, "beam size", Range{1, 64}},
      {"length-penalty", kValue, "length normalisation alpha", Range{0, 10}},
      {"max-length-ratio", kValue, "output length limit per source token", Range{0, 100, true, false}},
      {"min-length", kValue, "output tokens before end-of-sentence is allowed", Range{0, 1000}},
      {"nbest", kValue, "hypotheses per sentence", Range{1, 64}},
      {"lowercase", kFlag, "case-insensitive scoring"},
      // Model-specific architecture and training.
      {"pooling", kValue, "how a text's states become one vector"},
      {"embed-dropout", kValue, "dropout on embeddings", Range{0, 1, false, true}},
      {"hidden-dropout", kValue, "dropout between recurrent layers", Range{0, 1, false, true}},
      {"locked-dropout", kFlag, "one dropout mask per sequence shared over time"},
      {"vocabulary-dropout", kValue, "probability of dropping a token type from the embeddings", Range{0, 1, false, true}},
      {"weight-dropout", kValue, "DropConnect probability on the recurrent weights", Range{0, 1, false, true}},
      {"ar", kValue, "activation regularisation weight", Range{0, 1e6}},
      {"tar", kValue, "temporal activation regularisation weight", Range{0, 1e6}},
      {"word-dropout", kValue, "probability of reading a training word as unknown", Range{0, 1, false, true}},
      {"rare-word-dropout", kValue, "probability of reading a once-seen training word as unknown", Range{0, 1}},
      {"min-word-count", kValue, "rarer training words are unknown", Range{1, 1e9}},
      {"lm-weight", kValue, "weight of an auxiliary language-model loss", Range{0, 100}},
      {"teacher", kValue, "model to distil from"},
      {"augment-spans", kValue, "random spans per training text labelled by the teacher", Range{0, 100}},
      {"ensemble", kValue, "members trained and averaged", Range{1, 64}},
      {"decoder", kValue, "tag decoder: crf or softmax"},
      {"char-embed", kValue, "character embedding size", Range{0, 4096}},
      {"char-hidden", kValue, "character BiLSTM units per direction", Range{1, 4096}},
      {"piece-vocab", kValue, "SentencePiece vocabulary of piece features", Range{0, 1e6}},
      {"piece-embed", kValue, "piece embedding size", Range{1, 4096}},
      {"casing-embed", kValue, "casing feature embedding size", Range{0, 4096}},
      {"attention", kValue, "attention function: general or additive"},
      {"input-feeding", kFlag, "feed the previous attentional state to the decoder"},
      {"label-smoothing", kValue, "label smoothing", Range{0, 1, false, true}},
      {"batch-tokens", kValue, "padded tokens per batch", Range{0, 1e7}},
      {"dev-beam", kValue, "beam of the dev score", Range{1, 64}},
      {"bptt", kValue, "tokens per backpropagation-through-time segment", Range{1, 10000}},
      // Tokenizer.
      {"vocab-size", kValue, "SentencePiece vocabulary size", Range{8, 1e6}},
      {"spm-type", kValue, "SentencePiece model type"},
      {"spm-normalization", kValue, "SentencePiece normalisation rule"},
      {"separate-vocab", kFlag, "one tokenizer per language"},
      {"sample-alpha", kValue, "subword regularisation alpha", Range{0, 1}},
      {"sample-nbest", kValue, "segmentations subword regularisation samples from", Range{-1, 1000}},
      // Benchmarks.
      {"repeat", kValue, "timed passes", Range{1, 1000}},
      {"singles", kValue, "items timed one at a time", Range{1, 1e6}},
      {"tokens", kValue, "tokens generated per timed run", Range{2, 1e6}},
      {"steps", kValue, "timed training steps", Range{1, 1e6}},
  };
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return v;
}

}  // namespace

std::string Range::to_string() const {
  auto number = [](double v) {
    char text[32];
    std::snprintf(text, sizeof text, "%.15g", v);  // 1000000, not 1e+06
    return std::string(text);
  };
  return std::string(min_open ? "(" : "[") + number(min) + ", " + number(max) + (max_open ? ")" : "]");
}

bool Range::contains(double v) const {
  if (!std::isfinite(v)) return false;
  return (min_open ? v > min : v >= min) && (max_open ? v < max : v <= max);
}

const VocabularyEntry* find_in_vocabulary(const std::string& name) {
  const auto& v = option_vocabulary();
  const auto it = std::lower_bound(v.begin(), v.end(), name, [](const auto& e, const std::string& n) { return e.name < n; });
  return it != v.end() && it->name == name ? &*it : nullptr;
}

const std::vector<VocabularyEntry>& option_vocabulary() {
  static const std::vector<VocabularyEntry> vocabulary = make_vocabulary();
  return vocabulary;
}

}  // namespace cellstate
