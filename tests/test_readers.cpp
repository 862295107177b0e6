// Files, readers, tag schemes and batching (lib/src/io.cpp, readers.cpp,
// batching.cpp).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "cellstate/batching.h"
#include "cellstate/io.h"
#include "cellstate/readers.h"
#include "test_util.h"

namespace cs = cellstate;
using cellstate::testing::data_path;
using cellstate::testing::exception_of;

TEST(Utf8, FindsInvalidBytes) {
  EXPECT_EQ(cs::find_invalid_utf8("plain ascii"), std::string_view::npos);
  EXPECT_EQ(cs::find_invalid_utf8("Gr\xC3\xBC\xC3\x9F" "e \xE2\x82\xAC \xF0\x9F\x98\x80"), std::string_view::npos);
  EXPECT_EQ(cs::find_invalid_utf8("ab\xFF"), 2u);             // never valid
  EXPECT_EQ(cs::find_invalid_utf8("a\xC3"), 1u);              // truncated
  EXPECT_EQ(cs::find_invalid_utf8("\xC0\xAF"), 0u);           // overlong '/'
  EXPECT_EQ(cs::find_invalid_utf8("x\xED\xA0\x80"), 1u);      // surrogate
  EXPECT_EQ(cs::find_invalid_utf8("\xF4\x90\x80\x80"), 0u);   // > U+10FFFF
  EXPECT_EQ(cs::utf8_length("Gr\xC3\xBC\xC3\x9F" "e"), 5);
}

TEST(LineReader, ReadsPlainAndGzipAlike) {
  std::vector<std::string> plain, gz;
  std::string line;
  cs::LineReader a(data_path("parallel.de")), b(data_path("parallel_gz.de.gz"));
  while (a.next(line)) plain.push_back(line);
  while (b.next(line)) gz.push_back(line);
  ASSERT_EQ(plain.size(), 4u);
  EXPECT_EQ(plain, gz);
  EXPECT_EQ(plain[0], "Zwei M\xC3\xA4nner stehen.");
  EXPECT_EQ(b.line_number(), 4);
}

TEST(LineReader, StripsCrLfAndBom) {
  cs::TempDir dir;
  const auto path = dir.file("crlf.txt");
  std::ofstream(path) << "\xEF\xBB\xBF" "first\r\nsecond\r\nlast-without-newline";
  cs::LineReader r(path);
  std::string line;
  std::vector<std::string> lines;
  while (r.next(line)) lines.push_back(line);
  EXPECT_EQ(lines, (std::vector<std::string>{"first", "second", "last-without-newline"}));
}

TEST(LineReader, InvalidUtf8IsAnErrorNamingFileAndLine) {
  const auto msg = exception_of([] {
    cs::LineReader r(data_path("invalid_utf8.txt"));
    std::string line;
    while (r.next(line)) {
    }
  });
  EXPECT_NE(msg.find("invalid_utf8.txt:2: invalid UTF-8 at byte 5"), std::string::npos) << msg;
}

TEST(LineReader, MissingFileAndBinaryAndLongLines) {
  EXPECT_NE(exception_of([] { cs::LineReader r(data_path("no-such-file.txt")); })
                .find("no-such-file.txt: cannot open"),
            std::string::npos);
  cs::TempDir dir;
  std::ofstream(dir.file("bin")) << std::string("ab\0cd\n", 6);
  EXPECT_NE(exception_of([&] {
              cs::LineReader r(dir.file("bin"));
              std::string l;
              r.next(l);
            }).find("bin:1: NUL byte"),
            std::string::npos);
  std::ofstream(dir.file("long")) << "short\n" << std::string(100, 'x') << "\n";
  EXPECT_NE(exception_of([&] {
              cs::LineReader r(dir.file("long"), 50);
              std::string l;
              while (r.next(l)) {
              }
            }).find("long:2: line longer than 50 bytes"),
            std::string::npos);
}

TEST(AtomicWrite, ReplacesWholeFileAndLeavesNoTemporary) {
  cs::TempDir dir;
  const auto path = dir.file("out.txt");
  cs::atomic_write(path, "first version");
  cs::atomic_write(path, "second");
  EXPECT_EQ(cs::read_file(path), "second");
  EXPECT_THROW(cs::atomic_write_with(path, [](const std::string& tmp) {
                 std::ofstream(tmp) << "partial";
                 throw std::runtime_error("writer failed");
               }),
               std::runtime_error);
  EXPECT_EQ(cs::read_file(path), "second");  // untouched
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

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

TEST(TagSchemes, SpansOfEachScheme) {
  using V = std::vector<std::string>;
  const std::vector<cs::Span> expected = {{0, 2, "PER"}, {2, 3, "PER"}, {4, 5, "LOC"}};
  EXPECT_EQ(cs::tags_to_spans(V{"I-PER", "I-PER", "B-PER", "O", "I-LOC"}, cs::TagScheme::kIOB1), expected);
  EXPECT_EQ(cs::tags_to_spans(V{"B-PER", "I-PER", "B-PER", "O", "B-LOC"}, cs::TagScheme::kIOB2), expected);
  EXPECT_EQ(cs::tags_to_spans(V{"B-PER", "E-PER", "S-PER", "O", "S-LOC"}, cs::TagScheme::kIOBES), expected);
  // Lenient like conlleval: an I- of another type starts a new entity.
  EXPECT_EQ(cs::tags_to_spans(V{"B-PER", "I-LOC"}, cs::TagScheme::kIOB2),
            (std::vector<cs::Span>{{0, 1, "PER"}, {1, 2, "LOC"}}));
  EXPECT_THROW(cs::tags_to_spans(V{"S-PER"}, cs::TagScheme::kIOB2), std::invalid_argument);
  EXPECT_THROW(cs::tags_to_spans(V{"X-PER"}, cs::TagScheme::kIOB2), std::invalid_argument);
}

TEST(TagSchemes, ConversionsAreLossless) {
  using V = std::vector<std::string>;
  const V iob1 = {"I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "B-ORG", "I-ORG", "O", "I-MISC"};
  const V iob2 = cs::convert_tags(iob1, cs::TagScheme::kIOB1, cs::TagScheme::kIOB2);
  const V iobes = cs::convert_tags(iob1, cs::TagScheme::kIOB1, cs::TagScheme::kIOBES);
  EXPECT_EQ(iob2, (V{"B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "B-ORG", "I-ORG", "O", "B-MISC"}));
  EXPECT_EQ(iobes, (V{"B-PER", "E-PER", "S-PER", "O", "S-LOC", "S-ORG", "B-ORG", "E-ORG", "O", "S-MISC"}));
  for (auto from : {cs::TagScheme::kIOB1, cs::TagScheme::kIOB2, cs::TagScheme::kIOBES}) {
    const V& source = from == cs::TagScheme::kIOB1 ? iob1 : from == cs::TagScheme::kIOB2 ? iob2 : iobes;
    for (auto to : {cs::TagScheme::kIOB1, cs::TagScheme::kIOB2, cs::TagScheme::kIOBES}) {
      const V there = cs::convert_tags(source, from, to);
      EXPECT_EQ(cs::convert_tags(there, to, from), source)
          << cs::to_string(from) << " -> " << cs::to_string(to) << " -> back";
    }
  }
  EXPECT_EQ(cs::parse_tag_scheme("BIO"), cs::TagScheme::kIOB2);
  EXPECT_THROW(cs::parse_tag_scheme("bilou"), std::invalid_argument);
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

TEST(Batching, PadBatchLengthsAndMask) {
  auto b = cs::pad_batch({{5, 6, 7}, {8}, {9, 10}});
  EXPECT_TRUE(torch::equal(b.ids, torch::tensor({5, 6, 7, 8, 0, 0, 9, 10, 0}, torch::kInt64).view({3, 3})));
  EXPECT_TRUE(torch::equal(b.lengths, torch::tensor({3, 1, 2}, torch::kInt64)));
  EXPECT_EQ(b.mask.sum().item<int64_t>(), 6);
  EXPECT_FALSE(b.mask[1][1].item<bool>());
  std::vector<int64_t> ids = {1, 2, 3, 4};
  EXPECT_TRUE(cs::truncate(ids, 2));
  EXPECT_EQ(ids.size(), 2u);
  EXPECT_FALSE(cs::truncate(ids, 0));
}

TEST(Batching, BucketsAreDeterministicCompleteAndTight) {
  std::vector<int64_t> lengths;
  cs::DataRng rng(7);
  for (int i = 0; i < 1000; ++i) lengths.push_back(1 + static_cast<int64_t>(rng.below(60)));
  cs::BucketOptions opt;
  opt.batch_size = 16;
  const auto a = cs::bucket_batches(lengths, opt, 1, 0);
  EXPECT_EQ(a, cs::bucket_batches(lengths, opt, 1, 0));
  EXPECT_NE(a, cs::bucket_batches(lengths, opt, 1, 1));
  EXPECT_NE(a, cs::bucket_batches(lengths, opt, 2, 0));
  std::multiset<int64_t> seen;
  auto padding = [&](const std::vector<std::vector<int64_t>>& batches) {
    int64_t pad = 0;
    for (const auto& b : batches) {
      int64_t longest = 0;
      for (auto i : b) longest = std::max(longest, lengths[static_cast<size_t>(i)]);
      for (auto i : b) pad += longest - lengths[static_cast<size_t>(i)];
    }
    return pad;
  };
  for (const auto& b : a) {
    EXPECT_LE(b.size(), 16u);
    seen.insert(b.begin(), b.end());
  }
  EXPECT_EQ(seen.size(), 1000u);
  EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), 1000u);
  cs::BucketOptions random = opt;
  random.chunk_batches = 1;
  EXPECT_LT(padding(a) * 5, padding(cs::bucket_batches(lengths, random, 1, 0)));

  cs::BucketOptions by_tokens;
  by_tokens.max_tokens = 200;
  for (const auto& b : cs::bucket_batches(lengths, by_tokens, 1, 0)) {
    int64_t longest = 0;
    for (auto i : b) longest = std::max(longest, lengths[static_cast<size_t>(i)]);
    EXPECT_TRUE(b.size() == 1 || longest * static_cast<int64_t>(b.size()) <= 200);
  }
  const auto sorted = cs::sorted_batches({3, 9, 1, 9, 4}, 2);
  EXPECT_EQ(sorted, (std::vector<std::vector<int64_t>>{{1, 3}, {4, 0}, {2}}));
}
