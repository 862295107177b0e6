#include "cellstate/cli/vocabulary.h"

#include <algorithm>

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
      {"layers", kValue, "stacked recurrent layers"},
      {"hidden", kValue, "hidden units per direction"},
      {"embed", kValue, "embedding size"},
      {"dropout", kValue, "dropout probability"},
      {"bidirectional", kFlag, "bidirectional recurrent layers"},
      {"half", kFlag, "store the weights as float16"},
      {"tie", kFlag, "the output layer shares the embeddings"},
      // Training (add_training_options).
      {"epochs", kValue, "maximum epochs"},
      {"batch-size", kValue, "examples (sentences, texts) per batch"},
      {"lr", kValue, "learning rate"},
      {"optimizer", kValue, "adam, adamw or sgd"},
      {"weight-decay", kValue, "weight decay"},
      {"momentum", kValue, "SGD momentum"},
      {"clip", kValue, "gradient norm clipping"},
      {"lr-schedule", kValue, "learning-rate schedule"},
      {"lr-decay", kValue, "learning-rate decay factor"},
      {"lr-step", kValue, "epochs or evaluations between decays"},
      {"warmup", kValue, "warm-up steps"},
      {"min-lr", kValue, "lowest learning rate"},
      {"patience", kValue, "evaluations without improvement before stopping"},
      {"eval-every", kValue, "steps between evaluations"},
      {"seed", kValue, "random seed (training: initialisation and data order; use: sampling)"},
      {"resume", kFlag, "continue from the model directory's checkpoint"},
      {"max-time", kValue, "minutes of training at most"},
      {"checkpoint-every", kValue, "minutes between checkpoints"},
      // Runtime (add_runtime_options).
      {"threads", kValue, "intra-op threads"},
      {"device", kValue, "cpu or cuda"},
      {"quiet", kFlag, "no progress output on stderr"},
      // Data.
      {"train", kValue, "training data file"},
      {"dev", kValue, "dev data file (early stopping)"},
      {"valid", kValue, "dev text file (early stopping)"},
      {"valid-fraction", kValue, "share of a text's end held out as dev text"},
      {"data", kValue, "data file to evaluate or time on"},
      {"train-data", kValue, "text to time training on"},
      {"src", kValue, "source sentences file"},
      {"ref", kValue, "reference translations file"},
      {"src-train", kValue, "training source sentences"},
      {"tgt-train", kValue, "training target sentences"},
      {"src-dev", kValue, "dev source sentences"},
      {"tgt-dev", kValue, "dev target sentences"},
      {"input-format", kValue, "the input's format"},
      {"data-scheme", kValue, "the data's tag scheme"},
      {"token-column", kValue, "CoNLL column of the tokens"},
      {"tag-column", kValue, "CoNLL column of the tags"},
      {"label-names", kValue, "names for the data's labels"},
      {"max-length", kValue, "tokens kept per text"},
      {"max-words", kValue, "longest training sentence kept, in words"},
      // Output.
      {"format", kValue, "the output's format"},
      {"json", kFlag, "print the result as JSON"},
      {"output", kValue, "also write a file of per-item results"},
      {"dump-ids", kValue, "also write the token ids as JSON (for the Python peers)"},
      {"attention-weights", kFlag, "include attention weights in JSONL output"},
      {"attention-svg", kValue, "directory for attention heatmaps"},
      {"unit", kValue, "what one result is about: a line or a file"},
      {"top-k", kValue, "keep the k most probable (labels shown; tokens sampled from)"},
      {"threshold", kValue, "lowest probability a label is shown with"},
      {"tag-scheme", kValue, "tag scheme: bio or iobes"},
      // Generation and decoding.
      {"prompt", kValue, "text to continue"},
      {"prompt-file", kValue, "file holding the text to continue"},
      {"max-tokens", kValue, "tokens to generate at most"},
      {"max-prompt-tokens", kValue, "prompt tokens read at most"},
      {"stop", kValue, "string that ends a continuation"},
      {"greedy", kFlag, "take the most probable token instead of sampling"},
      {"sample", kFlag, "sample each token instead of searching"},
      {"num-samples", kValue, "sampled continuations per prompt"},
      {"temperature", kValue, "sampling temperature"},
      {"top-p", kValue, "nucleus sampling mass"},
      {"repetition-penalty", kValue, "penalty on tokens already seen"},
      {"beam", kValue, "beam size"},
      {"length-penalty", kValue, "length normalisation alpha"},
      {"max-length-ratio", kValue, "output length limit per source token"},
      {"min-length", kValue, "output tokens before end-of-sentence is allowed"},
      {"nbest", kValue, "hypotheses per sentence"},
      {"lowercase", kFlag, "case-insensitive scoring"},
      // Model-specific architecture and training.
      {"pooling", kValue, "how a text's states become one vector"},
      {"embed-dropout", kValue, "dropout on embeddings"},
      {"word-dropout", kValue, "probability of reading a training word as unknown"},
      {"rare-word-dropout", kValue, "probability of reading a once-seen training word as unknown"},
      {"min-word-count", kValue, "rarer training words are unknown"},
      {"lm-weight", kValue, "weight of an auxiliary language-model loss"},
      {"teacher", kValue, "model to distil from"},
      {"augment-spans", kValue, "random spans per training text labelled by the teacher"},
      {"ensemble", kValue, "members trained and averaged"},
      {"decoder", kValue, "tag decoder: crf or softmax"},
      {"char-embed", kValue, "character embedding size"},
      {"char-hidden", kValue, "character BiLSTM units per direction"},
      {"piece-vocab", kValue, "SentencePiece vocabulary of piece features"},
      {"piece-embed", kValue, "piece embedding size"},
      {"casing-embed", kValue, "casing feature embedding size"},
      {"attention", kValue, "attention function: general or additive"},
      {"input-feeding", kFlag, "feed the previous attentional state to the decoder"},
      {"label-smoothing", kValue, "label smoothing"},
      {"batch-tokens", kValue, "padded tokens per batch"},
      {"dev-beam", kValue, "beam of the dev score"},
      {"bptt", kValue, "tokens per backpropagation-through-time segment"},
      // Tokenizer.
      {"vocab-size", kValue, "SentencePiece vocabulary size"},
      {"spm-type", kValue, "SentencePiece model type"},
      {"spm-normalization", kValue, "SentencePiece normalisation rule"},
      {"separate-vocab", kFlag, "one tokenizer per language"},
      {"sample-alpha", kValue, "subword regularisation alpha"},
      {"sample-nbest", kValue, "segmentations subword regularisation samples from"},
      // Benchmarks.
      {"repeat", kValue, "timed passes"},
      {"singles", kValue, "items timed one at a time"},
      {"tokens", kValue, "tokens generated per timed run"},
      {"steps", kValue, "timed training steps"},
  };
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return v;
}

}  // namespace

const std::vector<VocabularyEntry>& option_vocabulary() {
  static const std::vector<VocabularyEntry> vocabulary = make_vocabulary();
  return vocabulary;
}

}  // namespace cellstate
