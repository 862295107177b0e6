// UTF-8 checks (util/text.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "cellstate/data/batching.h"
#include "cellstate/util/io.h"
#include "cellstate/data/readers.h"
#include "cellstate/util/text.h"
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
