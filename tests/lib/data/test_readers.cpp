// Dataset readers (data/readers.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "cellstate/data/batching.h"
#include "cellstate/util/io.h"
#include "cellstate/data/readers.h"
#include "test_util.h"

namespace cs = cellstate;
using cellstate::testing::data_path;
using cellstate::testing::exception_of;

TEST(ClassificationReader, TsvSkipsAndCountsEmptyLines) {
  cs::ReadStats stats;
  const auto ex = cs::read_classification(data_path("classify.tsv"), cs::ClassificationFormat::kAuto, &stats);
  ASSERT_EQ(ex.size(), 4u);
  EXPECT_EQ(ex[0].label, "pos");
  EXPECT_EQ(ex[0].text, "A moving, funny and beautifully made story.");
  EXPECT_EQ(ex[2].line, 4);
  EXPECT_EQ(stats.skipped_empty, 1);
  EXPECT_EQ(stats.summary(), "1 skipped (empty)");
  const auto labels = cs::LabelSet::from_examples(ex);
  EXPECT_EQ(labels.names(), (std::vector<std::string>{"neg", "pos"}));
  EXPECT_EQ(labels.id("pos", "f", 1), 1);
  EXPECT_NE(exception_of([&] { labels.id("neutral", "dev.tsv", 7); })
                .find("dev.tsv:7: unknown label 'neutral', expected one of: neg, pos"),
            std::string::npos);
}

TEST(ClassificationReader, SstStyle) {
  const auto ex = cs::read_classification(data_path("classify.sst"));
  ASSERT_EQ(ex.size(), 3u);
  EXPECT_EQ(ex[1].label, "0");
  EXPECT_EQ(ex[1].text, "an awful script with wooden acting .");
}

TEST(ClassificationReader, DirectoryPerLabel) {
  cs::ReadStats stats;
  const auto ex = cs::read_classification(data_path("docs"), cs::ClassificationFormat::kAuto, &stats);
  ASSERT_EQ(ex.size(), 3u);
  EXPECT_EQ(ex[0].label, "neg");
  EXPECT_EQ(ex[1].label, "pos");
  EXPECT_EQ(ex[1].text, "A wonderful film.\nI loved every minute.");
  EXPECT_EQ(stats.skipped_empty, 1);  // docs/neg/empty.txt
}

TEST(ClassificationReader, Errors) {
  EXPECT_NE(exception_of([] { cs::read_classification(data_path("classify_bad.tsv")); })
                .find("classify_bad.tsv:2: expected LABEL<TAB>TEXT, found no tab"),
            std::string::npos);
  EXPECT_NE(exception_of([] { cs::read_classification(data_path("empty.txt")); })
                .find("empty.txt: no examples (empty input)"),
            std::string::npos);
  EXPECT_NE(exception_of([] { cs::read_classification(data_path("missing.tsv")); })
                .find("missing.tsv: no such file"),
            std::string::npos);
  EXPECT_NE(exception_of([] { cs::read_classification(data_path("invalid_utf8.txt"), cs::ClassificationFormat::kSst); })
                .find("invalid_utf8.txt:2: invalid UTF-8"),
            std::string::npos);
  cs::TempDir dir;
  std::ofstream(dir.file("one.sst")) << "1 fine text\nlonely\n";
  EXPECT_NE(exception_of([&] { cs::read_classification(dir.file("one.sst")); })
                .find("one.sst:2: expected LABEL TEXT"),
            std::string::npos);
}

TEST(ConllReader, ColumnsDocstartAndSentences) {
  const auto s = cs::read_conll(data_path("conll_iob1.txt"));
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].tokens, (std::vector<std::string>{"EU", "rejects", "German", "call", "."}));
  EXPECT_EQ(s[0].tags, (std::vector<std::string>{"I-ORG", "O", "I-MISC", "O", "O"}));
  EXPECT_EQ(s[0].line, 3);
  EXPECT_EQ(s[1].tags, (std::vector<std::string>{"I-PER", "I-PER", "B-PER"}));
  EXPECT_EQ(s[2].tokens.size(), 2u);
  cs::ConllOptions pos;
  pos.tag_column = 1;  // the POS column as "tags" is rejected: not O/B-/I-
  EXPECT_NE(exception_of([&] { cs::read_conll(data_path("conll_iob1.txt"), pos); })
                .find("conll_iob1.txt:3: expected a tag O or B-/I-/E-/S-TYPE in column 2, found 'NNP'"),
            std::string::npos);
  cs::ConllOptions chunks;
  chunks.tag_column = 2;  // chunk tags are valid tags
  EXPECT_EQ(cs::read_conll(data_path("conll_iob1.txt"), chunks)[0].tags[0], "B-NP");
  EXPECT_NE(exception_of([] { cs::read_conll(data_path("conll_bad.txt")); })
                .find("conll_bad.txt:2: expected 2 columns like line 1, found 3"),
            std::string::npos);
  cs::ConllOptions tokens_only;
  tokens_only.has_tags = false;
  EXPECT_TRUE(cs::read_conll(data_path("conll_iob1.txt"), tokens_only)[0].tags.empty());
}

TEST(ParallelReader, AlignedGzipEmptyAndLong) {
  cs::ReadStats stats;
  const auto pairs = cs::read_parallel(data_path("parallel.en"), data_path("parallel_gz.de.gz"), {}, &stats);
  ASSERT_EQ(pairs.size(), 3u);
  EXPECT_EQ(pairs[2].source, "A cat sleeps.");
  EXPECT_EQ(pairs[2].target, "Eine Katze schl\xC3\xA4" "ft.");
  EXPECT_EQ(pairs[2].line, 4);
  EXPECT_EQ(stats.skipped_empty, 1);
  cs::TempDir dir;
  std::ofstream(dir.file("s")) << "one two\none two three four\nshort\n";
  std::ofstream(dir.file("t")) << "eins zwei\neins\nkurz aber nicht sehr kurz\n";
  cs::ParallelOptions opt;
  opt.max_words = 3;
  cs::ReadStats s2;
  const auto kept = cs::read_parallel(dir.file("s"), dir.file("t"), opt, &s2);
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_EQ(kept[0].target, "eins zwei");
  EXPECT_EQ(s2.skipped_long, 2);
  opt.max_words = 1;
  EXPECT_NE(exception_of([&] { cs::read_parallel(dir.file("s"), dir.file("t"), opt); }).find("no sentence pairs"),
            std::string::npos);
}

TEST(ParallelReader, DifferentLineCountsGiveBothCounts) {
  const auto msg = exception_of([] { cs::read_parallel(data_path("parallel_short.en"), data_path("parallel.de")); });
  EXPECT_NE(msg.find("parallel_short.en: has 2 lines but"), std::string::npos) << msg;
  EXPECT_NE(msg.find("parallel.de has 4"), std::string::npos) << msg;
}
