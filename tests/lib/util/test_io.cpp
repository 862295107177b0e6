// Line reading and atomic writes (util/io.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "cellstate/data/batching.h"
#include "cellstate/util/io.h"
#include "cellstate/util/text.h"
#include "cellstate/data/readers.h"
#include "test_util.h"

namespace cs = cellstate;
using cellstate::testing::data_path;
using cellstate::testing::exception_of;

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

TEST(LineReader, TruncatesLongLinesAtACharacterBoundaryAndSkipsTheRest) {
  cs::TempDir dir;
  // Line 2: 9 bytes of 'x', then two-byte characters, 4 MB in all, read in
  // 64 KB chunks; line 3 ends in CRLF exactly at the cap; line 4 is longer
  // than the cap by its CR only; the last has no newline.
  const std::string e_acute = "\xC3\xA9";
  std::string big = std::string(9, 'x');
  for (int i = 0; i < 2000000; ++i) big += e_acute;
  std::ofstream(dir.file("long")) << "short\n" << big << "\n" << std::string(50, 'y') << "\r\n"
                                  << std::string(51, 'z') << "\r\n" << std::string(60, 'w');
  cs::LineReader r(dir.file("long"), 50, cs::LineReader::LongLines::kTruncate);
  std::string l;
  ASSERT_TRUE(r.next(l));
  EXPECT_EQ(l, "short");
  EXPECT_EQ(r.truncated_from(), 0);
  ASSERT_TRUE(r.next(l));
  EXPECT_EQ(l.size(), 49u) << "cut before the character that straddles byte 50";
  EXPECT_EQ(l.substr(0, 9), std::string(9, 'x'));
  EXPECT_EQ(cs::find_invalid_utf8(l), std::string_view::npos);
  EXPECT_EQ(r.truncated_from(), static_cast<int64_t>(big.size()));
  ASSERT_TRUE(r.next(l));
  EXPECT_EQ(l, std::string(50, 'y'));
  EXPECT_EQ(r.truncated_from(), 0) << "a CRLF line exactly at the cap is not cut";
  ASSERT_TRUE(r.next(l));
  EXPECT_EQ(l, std::string(50, 'z'));
  EXPECT_EQ(r.truncated_from(), 52);
  ASSERT_TRUE(r.next(l));
  EXPECT_EQ(l, std::string(50, 'w'));
  EXPECT_EQ(r.truncated_from(), 60);
  EXPECT_EQ(r.line_number(), 5);
  EXPECT_FALSE(r.next(l));
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
