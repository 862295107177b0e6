#pragma once
// Evaluation metrics, each computed the way the standard tool computes it.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cellstate/data/tag_scheme.h"

namespace cellstate {

// ---------------------------------------------------------------- classification

struct ClassScores {
  double precision = 0, recall = 0, f1 = 0;  // fractions in [0, 1]
  int64_t support = 0;                        // gold examples of the class
};

struct ClassificationReport {
  std::vector<std::string> labels;
  std::vector<std::vector<int64_t>> confusion;  // [gold][predicted]
  std::vector<ClassScores> per_class;
  double accuracy = 0;  // fraction
  double macro_precision = 0, macro_recall = 0, macro_f1 = 0;
  int64_t total = 0;

  std::string table() const;
  nlohmann::json to_json() const;
};

/// Precision/recall/F1 of a class with no predictions (or no gold examples)
/// count as 0, as scikit-learn does with zero_division=0.
ClassificationReport classification_report(const std::vector<int64_t>& gold,
                                           const std::vector<int64_t>& predicted,
                                           const std::vector<std::string>& labels);

// ---------------------------------------------------------------- chunks (NER)

struct ChunkCounts {
  int64_t correct = 0;  // chunks found in both, same boundaries and type
  int64_t guessed = 0;  // chunks predicted
  int64_t gold = 0;     // chunks in the gold data
  double precision() const;  // percent, as conlleval prints
  double recall() const;
  double f1() const;
};

struct ChunkReport {
  ChunkCounts overall;
  std::map<std::string, ChunkCounts> per_type;
  int64_t tokens = 0;
  int64_t correct_tags = 0;
  double accuracy() const;  // percent of tokens whose tag is right
  /// conlleval's own output format.
  std::string table() const;
  nlohmann::json to_json() const;
};

/// Incremental scorer; add one sentence at a time.
class ChunkScorer {
 public:
  /// IOB1 and IOB2 are scored by conlleval's exact rules (so its quirks on
  /// ill-formed sequences are reproduced); IOBES is first converted to IOB2,
  /// which scores its chunks correctly where conlleval would not.
  explicit ChunkScorer(TagScheme scheme) : scheme_(scheme) {}
  void add(const std::vector<std::string>& gold, const std::vector<std::string>& predicted);
  const ChunkReport& report() const { return report_; }

 private:
  TagScheme scheme_;
  ChunkReport report_;
};

// ---------------------------------------------------------------- BLEU and chrF

struct BleuOptions {
  bool lowercase = false;
  /// 13a (sacreBLEU's default, mteval-v13a) or none.
  std::string tokenize = "13a";
};

struct BleuScore {
  double score = 0;                     // 0..100
  std::vector<double> precisions;       // 4 n-gram precisions, percent (smoothed)
  std::vector<int64_t> correct, total;  // matching / hypothesis n-grams per order
  double brevity_penalty = 0;
  int64_t hyp_length = 0, ref_length = 0;
  /// sacreBLEU's line, e.g. "BLEU = 34.12 65.1/41.0/28.5/20.0 (BP = 0.981 ratio = 0.981 hyp_len = 12 ref_len = 13)"
  std::string to_string() const;
  nlohmann::json to_json() const;
};

/// mteval-v13a tokenisation as sacreBLEU does it.
std::string tokenize_13a(const std::string& line);

/// Corpus BLEU as sacreBLEU computes it by default (one reference per
/// segment, 4-grams, exponential smoothing, brevity penalty).
BleuScore corpus_bleu(const std::vector<std::string>& hypotheses,
                      const std::vector<std::string>& references, const BleuOptions& options = {});

/// Corpus chrF as sacreBLEU computes it by default (character 6-grams,
/// beta 2, whitespace ignored), 0..100.
double corpus_chrf(const std::vector<std::string>& hypotheses,
                   const std::vector<std::string>& references);

// ---------------------------------------------------------------- language models

/// exp(mean negative log-likelihood in nats).
double perplexity(double total_nll_nats, int64_t tokens);
/// Total negative log-likelihood in nats over the number of characters.
double nats_per_char(double total_nll_nats, int64_t characters);
double bits_per_char(double total_nll_nats, int64_t characters);

}  // namespace cellstate
