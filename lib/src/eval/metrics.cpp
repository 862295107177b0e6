#include "cellstate/eval/metrics.h"

#include "cellstate/util/text.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

namespace cellstate {

namespace {

double safe_div(double a, double b) { return b == 0 ? 0.0 : a / b; }
double f1_of(double p, double r) { return p + r == 0 ? 0.0 : 2 * p * r / (p + r); }

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

}  // namespace

// ---------------------------------------------------------------- classification

ClassificationReport classification_report(const std::vector<int64_t>& gold,
                                           const std::vector<int64_t>& predicted,
                                           const std::vector<std::string>& labels) {
  if (gold.size() != predicted.size())
    throw std::invalid_argument("classification_report: " + std::to_string(gold.size()) +
                                " gold labels but " + std::to_string(predicted.size()) +
                                " predictions");
  const size_t k = labels.size();
  ClassificationReport r;
  r.labels = labels;
  r.confusion.assign(k, std::vector<int64_t>(k, 0));
  int64_t correct = 0;
  for (size_t i = 0; i < gold.size(); ++i) {
    const auto g = static_cast<size_t>(gold[i]), p = static_cast<size_t>(predicted[i]);
    if (g >= k || p >= k) throw std::invalid_argument("classification_report: label id out of range");
    ++r.confusion[g][p];
    correct += g == p;
  }
  r.total = static_cast<int64_t>(gold.size());
  r.accuracy = safe_div(static_cast<double>(correct), static_cast<double>(r.total));
  for (size_t c = 0; c < k; ++c) {
    int64_t tp = r.confusion[c][c], gold_c = 0, pred_c = 0;
    for (size_t o = 0; o < k; ++o) {
      gold_c += r.confusion[c][o];
      pred_c += r.confusion[o][c];
    }
    ClassScores s;
    s.precision = safe_div(static_cast<double>(tp), static_cast<double>(pred_c));
    s.recall = safe_div(static_cast<double>(tp), static_cast<double>(gold_c));
    s.f1 = f1_of(s.precision, s.recall);
    s.support = gold_c;
    r.per_class.push_back(s);
    r.macro_precision += s.precision / static_cast<double>(k);
    r.macro_recall += s.recall / static_cast<double>(k);
    r.macro_f1 += s.f1 / static_cast<double>(k);
  }
  return r;
}

std::string ClassificationReport::table() const {
  std::ostringstream out;
  size_t w = 9;
  for (const auto& l : labels) w = std::max(w, l.size());
  out << "accuracy " << fixed(100 * accuracy, 2) << "% (" << total << " examples), macro-F1 "
      << fixed(100 * macro_f1, 2) << "%\n\n";
  out << std::left << std::setw(static_cast<int>(w)) << "label" << std::right << std::setw(10)
      << "precision" << std::setw(10) << "recall" << std::setw(10) << "F1" << std::setw(10)
      << "support\n";
  for (size_t c = 0; c < labels.size(); ++c)
    out << std::left << std::setw(static_cast<int>(w)) << labels[c] << std::right << std::setw(10)
        << fixed(100 * per_class[c].precision, 2) << std::setw(10)
        << fixed(100 * per_class[c].recall, 2) << std::setw(10) << fixed(100 * per_class[c].f1, 2)
        << std::setw(9) << per_class[c].support << "\n";
  out << std::left << std::setw(static_cast<int>(w)) << "macro" << std::right << std::setw(10)
      << fixed(100 * macro_precision, 2) << std::setw(10) << fixed(100 * macro_recall, 2)
      << std::setw(10) << fixed(100 * macro_f1, 2) << std::setw(9) << total << "\n\n";
  out << "confusion (rows gold, columns predicted)\n" << std::setw(static_cast<int>(w)) << "";
  for (const auto& l : labels) out << " " << std::setw(static_cast<int>(std::max<size_t>(8, l.size()))) << l;
  out << "\n";
  for (size_t g = 0; g < labels.size(); ++g) {
    out << std::left << std::setw(static_cast<int>(w)) << labels[g] << std::right;
    for (size_t p = 0; p < labels.size(); ++p)
      out << " " << std::setw(static_cast<int>(std::max<size_t>(8, labels[p].size()))) << confusion[g][p];
    out << "\n";
  }
  return out.str();
}

nlohmann::json ClassificationReport::to_json() const {
  nlohmann::json j;
  j["accuracy"] = accuracy;
  j["macro_precision"] = macro_precision;
  j["macro_recall"] = macro_recall;
  j["macro_f1"] = macro_f1;
  j["examples"] = total;
  j["labels"] = labels;
  j["confusion"] = confusion;
  for (size_t c = 0; c < labels.size(); ++c)
    j["per_class"][labels[c]] = {{"precision", per_class[c].precision},
                                 {"recall", per_class[c].recall},
                                 {"f1", per_class[c].f1},
                                 {"support", per_class[c].support}};
  return j;
}

// ---------------------------------------------------------------- conlleval

double ChunkCounts::precision() const { return 100.0 * safe_div(correct, guessed); }
double ChunkCounts::recall() const { return 100.0 * safe_div(correct, gold); }
double ChunkCounts::f1() const { return f1_of(precision(), recall()); }
double ChunkReport::accuracy() const { return 100.0 * safe_div(correct_tags, tokens); }

namespace {

// conlleval.pl's endOfChunk and startOfChunk, rule for rule.
bool end_of_chunk(const std::string& prev_tag, const std::string& tag, const std::string& prev_type,
                  const std::string& type) {
  bool end = false;
  if (prev_tag == "B" && tag == "B") end = true;
  if (prev_tag == "B" && tag == "O") end = true;
  if (prev_tag == "I" && tag == "B") end = true;
  if (prev_tag == "I" && tag == "O") end = true;
  if (prev_tag == "E" && tag == "E") end = true;
  if (prev_tag == "E" && tag == "I") end = true;
  if (prev_tag == "E" && tag == "O") end = true;
  if (prev_tag == "I" && tag == "O") end = true;
  if (prev_tag != "O" && prev_tag != "." && prev_type != type) end = true;
  if (prev_tag == "]") end = true;
  if (prev_tag == "[") end = true;
  return end;
}

bool start_of_chunk(const std::string& prev_tag, const std::string& tag,
                    const std::string& prev_type, const std::string& type) {
  bool start = false;
  if (prev_tag == "B" && tag == "B") start = true;
  if (prev_tag == "I" && tag == "B") start = true;
  if (prev_tag == "O" && tag == "B") start = true;
  if (prev_tag == "O" && tag == "I") start = true;
  if (prev_tag == "E" && tag == "E") start = true;
  if (prev_tag == "E" && tag == "I") start = true;
  if (prev_tag == "O" && tag == "E") start = true;
  if (prev_tag == "O" && tag == "I") start = true;
  if (tag != "O" && tag != "." && prev_type != type) start = true;
  if (tag == "[") start = true;
  if (tag == "]") start = true;
  return start;
}

// conlleval splits "B-PER" at the first '-': tag "B", type "PER".
void split_tag(const std::string& full, std::string& tag, std::string& type) {
  const size_t dash = full.find('-');
  if (dash == std::string::npos) {
    tag = full;
    type.clear();
  } else {
    tag = full.substr(0, dash);
    type = full.substr(dash + 1);
  }
}

}  // namespace

void ChunkScorer::add(const std::vector<std::string>& gold_in,
                      const std::vector<std::string>& predicted_in) {
  if (gold_in.size() != predicted_in.size())
    throw std::invalid_argument("ChunkScorer: " + std::to_string(gold_in.size()) + " gold tags but " +
                                std::to_string(predicted_in.size()) + " predicted");
  std::vector<std::string> gold = gold_in, predicted = predicted_in;
  if (scheme_ == TagScheme::kIOBES) {
    gold = convert_tags(gold, TagScheme::kIOBES, TagScheme::kIOB2);
    predicted = convert_tags(predicted, TagScheme::kIOBES, TagScheme::kIOB2);
  }
  auto& r = report_;
  // Each sentence is scored as conlleval scores it between two boundary lines:
  // state starts at O and the closing boundary ends any open chunk.
  std::string last_c = "O", last_g = "O", last_ct, last_gt;
  bool in_correct = false;
  for (size_t i = 0; i <= gold.size(); ++i) {
    const bool boundary = i == gold.size();
    std::string c, ct, g, gt;
    if (boundary) {
      c = g = "O";
    } else {
      split_tag(gold[i], c, ct);
      split_tag(predicted[i], g, gt);
    }
    const bool end_c = end_of_chunk(last_c, c, last_ct, ct);
    const bool end_g = end_of_chunk(last_g, g, last_gt, gt);
    const bool start_c = start_of_chunk(last_c, c, last_ct, ct);
    const bool start_g = start_of_chunk(last_g, g, last_gt, gt);
    if (in_correct) {
      if (end_c && end_g && last_gt == last_ct) {
        in_correct = false;
        ++r.overall.correct;
        ++r.per_type[last_ct].correct;
      } else if (end_c != end_g || gt != ct) {
        in_correct = false;
      }
    }
    if (start_c && start_g && gt == ct) in_correct = true;
    if (start_c) {
      ++r.overall.gold;
      ++r.per_type[ct].gold;
    }
    if (start_g) {
      ++r.overall.guessed;
      ++r.per_type[gt].guessed;
    }
    if (!boundary) {
      // Token accuracy on the tags as given (an IOBES S- is not a B-).
      if (gold_in[i] == predicted_in[i]) ++r.correct_tags;
      ++r.tokens;
    }
    last_c = c;
    last_g = g;
    last_ct = ct;
    last_gt = gt;
  }
  // The boundary leaves in_correct false (it ends every chunk).
}

std::string ChunkReport::table() const {
  std::ostringstream out;
  out << "processed " << tokens << " tokens with " << overall.gold << " phrases; found: "
      << overall.guessed << " phrases; correct: " << overall.correct << ".\n";
  out << "accuracy: " << std::setw(6) << fixed(accuracy(), 2) << "%; precision: " << std::setw(6)
      << fixed(overall.precision(), 2) << "%; recall: " << std::setw(6) << fixed(overall.recall(), 2)
      << "%; FB1: " << std::setw(6) << fixed(overall.f1(), 2) << "\n";
  for (const auto& [type, c] : per_type) {
    if (type.empty()) continue;
    out << std::setw(17) << type << ": precision: " << std::setw(6) << fixed(c.precision(), 2)
        << "%; recall: " << std::setw(6) << fixed(c.recall(), 2) << "%; FB1: " << std::setw(6)
        << fixed(c.f1(), 2) << "  " << c.guessed << "\n";
  }
  return out.str();
}

nlohmann::json ChunkReport::to_json() const {
  auto counts = [](const ChunkCounts& c) {
    return nlohmann::json{{"precision", c.precision()}, {"recall", c.recall()}, {"f1", c.f1()},
                          {"correct", c.correct},       {"found", c.guessed},  {"gold", c.gold}};
  };
  nlohmann::json j = counts(overall);
  j["token_accuracy"] = accuracy();
  j["tokens"] = tokens;
  for (const auto& [type, c] : per_type)
    if (!type.empty()) j["per_type"][type] = counts(c);
  return j;
}

// ---------------------------------------------------------------- BLEU

std::string tokenize_13a(const std::string& input) {
  // sacrebleu.tokenizers.tokenizer_13a.Tokenizer13a: language-independent part...
  std::string line;
  line.reserve(input.size() + 2);
  for (size_t i = 0; i < input.size();) {
    if (input.compare(i, 9, "<skipped>") == 0) {
      i += 9;
    } else if (input.compare(i, 2, "-\n") == 0) {
      i += 2;
    } else {
      line += input[i] == '\n' ? ' ' : input[i];
      ++i;
    }
  }
  if (line.find('&') != std::string::npos) {
    const std::pair<const char*, const char*> entities[] = {
        {"&quot;", "\""}, {"&amp;", "&"}, {"&lt;", "<"}, {"&gt;", ">"}};
    for (const auto& [from, to] : entities) {
      std::string out;
      const std::string f = from;
      size_t pos = 0, hit;
      while ((hit = line.find(f, pos)) != std::string::npos) {
        out.append(line, pos, hit - pos);
        out += to;
        pos = hit + f.size();
      }
      out.append(line, pos, std::string::npos);
      line = std::move(out);
    }
  }
  line = " " + line + " ";
  // ...then TokenizerRegexp's four substitutions, the same patterns.
  static const std::regex punct(R"(([\{-\~\[-\` -\&\(-\+\:-\@\/]))");
  static const std::regex period_comma_1(R"(([^0-9])([\.,]))");
  static const std::regex period_comma_2(R"(([\.,])([^0-9]))");
  static const std::regex dash(R"(([0-9])(-))");
  line = std::regex_replace(line, punct, " $1 ");
  line = std::regex_replace(line, period_comma_1, "$1 $2 ");
  line = std::regex_replace(line, period_comma_2, " $1 $2");
  line = std::regex_replace(line, dash, "$1 $2 ");
  // ' '.join(line.split()): Python splits on Unicode whitespace; in UTF-8
  // text the ASCII ones are what occur in practice.
  std::istringstream in(line);
  std::string token, out;
  while (in >> token) {
    if (!out.empty()) out += ' ';
    out += token;
  }
  return out;
}

namespace {

std::unordered_map<std::string, int64_t> ngram_counts(const std::vector<std::string>& words, int n) {
  std::unordered_map<std::string, int64_t> counts;
  for (size_t i = 0; i + static_cast<size_t>(n) <= words.size(); ++i) {
    std::string key = words[i];
    for (int k = 1; k < n; ++k) key += '\x01' + words[i + static_cast<size_t>(k)];
    ++counts[key];
  }
  return counts;
}

}  // namespace

BleuScore corpus_bleu(const std::vector<std::string>& hypotheses,
                      const std::vector<std::string>& references, const BleuOptions& options) {
  if (hypotheses.size() != references.size())
    throw std::invalid_argument("BLEU: " + std::to_string(hypotheses.size()) + " hypotheses but " +
                                std::to_string(references.size()) + " references");
  if (options.tokenize != "13a" && options.tokenize != "none")
    throw std::invalid_argument("BLEU tokenize must be 13a or none, got '" + options.tokenize + "'");
  constexpr int kOrder = 4;
  BleuScore s;
  s.correct.assign(kOrder, 0);
  s.total.assign(kOrder, 0);
  for (size_t i = 0; i < hypotheses.size(); ++i) {
    std::string h = hypotheses[i], r = references[i];
    if (options.lowercase) {
      h = lowercase_utf8(h);
      r = lowercase_utf8(r);
    }
    if (options.tokenize == "13a") {
      h = tokenize_13a(h);
      r = tokenize_13a(r);
    }
    const auto hw = split_whitespace(h), rw = split_whitespace(r);
    s.hyp_length += static_cast<int64_t>(hw.size());
    s.ref_length += static_cast<int64_t>(rw.size());
    for (int n = 1; n <= kOrder; ++n) {
      const auto hc = ngram_counts(hw, n), rc = ngram_counts(rw, n);
      for (const auto& [gram, count] : hc) {
        const auto it = rc.find(gram);
        if (it != rc.end()) s.correct[static_cast<size_t>(n - 1)] += std::min(count, it->second);
        s.total[static_cast<size_t>(n - 1)] += count;
      }
    }
  }
  // sacrebleu BLEU.compute_bleu with smooth_method='exp', effective_order=False.
  s.precisions.assign(kOrder, 0.0);
  double smooth = 1.0;
  for (int n = 0; n < kOrder; ++n) {
    if (s.total[static_cast<size_t>(n)] == 0) break;
    if (s.correct[static_cast<size_t>(n)] == 0) {
      smooth *= 2;
      s.precisions[static_cast<size_t>(n)] = 100.0 / (smooth * static_cast<double>(s.total[static_cast<size_t>(n)]));
    } else {
      s.precisions[static_cast<size_t>(n)] =
          100.0 * static_cast<double>(s.correct[static_cast<size_t>(n)]) / static_cast<double>(s.total[static_cast<size_t>(n)]);
    }
  }
  if (s.hyp_length < s.ref_length)
    s.brevity_penalty = s.hyp_length > 0 ? std::exp(1.0 - static_cast<double>(s.ref_length) / static_cast<double>(s.hyp_length)) : 0.0;
  else
    s.brevity_penalty = 1.0;
  double log_sum = 0;
  for (const double p : s.precisions) log_sum += p > 0 ? std::log(p) : -9999999999.0;
  s.score = s.brevity_penalty * std::exp(log_sum / kOrder);
  return s;
}

std::string BleuScore::to_string() const {
  std::ostringstream out;
  out << "BLEU = " << fixed(score, 2) << " ";
  for (size_t i = 0; i < precisions.size(); ++i) out << (i ? "/" : "") << fixed(precisions[i], 1);
  const double ratio = ref_length > 0 ? static_cast<double>(hyp_length) / static_cast<double>(ref_length) : 0.0;
  out << " (BP = " << fixed(brevity_penalty, 3) << " ratio = " << fixed(ratio, 3)
      << " hyp_len = " << hyp_length << " ref_len = " << ref_length << ")";
  return out.str();
}

nlohmann::json BleuScore::to_json() const {
  return {{"bleu", score},          {"precisions", precisions}, {"brevity_penalty", brevity_penalty},
          {"hyp_length", hyp_length}, {"ref_length", ref_length}, {"correct", correct},
          {"total", total}};
}

// ---------------------------------------------------------------- chrF

namespace {

std::vector<std::string> code_points_without_whitespace(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (!(c == ' ' || (c >= '\t' && c <= '\r'))) out.push_back(s.substr(i, len));
    i += len;
  }
  return out;
}

}  // namespace

double corpus_chrf(const std::vector<std::string>& hypotheses,
                   const std::vector<std::string>& references) {
  if (hypotheses.size() != references.size())
    throw std::invalid_argument("chrF: " + std::to_string(hypotheses.size()) + " hypotheses but " +
                                std::to_string(references.size()) + " references");
  constexpr int kOrder = 6;
  constexpr double kBeta = 2;
  std::vector<int64_t> hyp(kOrder, 0), ref(kOrder, 0), match(kOrder, 0);
  for (size_t i = 0; i < hypotheses.size(); ++i) {
    const auto h = code_points_without_whitespace(hypotheses[i]);
    const auto r = code_points_without_whitespace(references[i]);
    for (int n = 1; n <= kOrder; ++n) {
      auto grams = [n](const std::vector<std::string>& cps) {
        std::unordered_map<std::string, int64_t> counts;
        for (size_t k = 0; k + static_cast<size_t>(n) <= cps.size(); ++k) {
          std::string key;
          for (int j = 0; j < n; ++j) key += cps[k + static_cast<size_t>(j)];
          ++counts[key];
        }
        return counts;
      };
      const auto hc = grams(h), rc = grams(r);
      const auto o = static_cast<size_t>(n - 1);
      for (const auto& [g, c] : hc) {
        hyp[o] += c;
        const auto it = rc.find(g);
        if (it != rc.end()) match[o] += std::min(c, it->second);
      }
      for (const auto& [g, c] : rc) ref[o] += c;
    }
  }
  double avg_p = 0, avg_r = 0;
  int effective = 0;
  for (size_t o = 0; o < kOrder; ++o) {
    if (hyp[o] > 0 && ref[o] > 0) {
      avg_p += static_cast<double>(match[o]) / static_cast<double>(hyp[o]);
      avg_r += static_cast<double>(match[o]) / static_cast<double>(ref[o]);
      ++effective;
    }
  }
  if (effective == 0) return 0.0;
  avg_p /= effective;
  avg_r /= effective;
  if (avg_p + avg_r == 0) return 0.0;
  const double b2 = kBeta * kBeta;
  return 100.0 * (1 + b2) * avg_p * avg_r / (b2 * avg_p + avg_r);
}

// ---------------------------------------------------------------- LM

double perplexity(double total_nll_nats, int64_t tokens) {
  return tokens > 0 ? std::exp(total_nll_nats / static_cast<double>(tokens)) : 0.0;
}

double nats_per_char(double total_nll_nats, int64_t characters) {
  return characters > 0 ? total_nll_nats / static_cast<double>(characters) : 0.0;
}

double bits_per_char(double total_nll_nats, int64_t characters) {
  return nats_per_char(total_nll_nats, characters) / std::log(2.0);
}

}  // namespace cellstate
