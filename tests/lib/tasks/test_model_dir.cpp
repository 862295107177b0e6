// The model directory (tasks/model_dir.h).
#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <sstream>
#include <fstream>

#include <unistd.h>

#include "cellstate/data/batching.h"
#include "cellstate/nn/rnn.h"
#include "cellstate/tasks/model_dir.h"
#include "cellstate/util/io.h"
#include "cellstate/util/sha256.h"
#include "test_util.h"
#include "tiny_model.h"

namespace cs = cellstate;
using cellstate::testing::exception_of;
using cellstate::testing::Tiny;

TEST(ModelDir, ConfigRoundTripAndChecks) {
  cs::TempDir dir;
  auto config = cs::new_model_config("sentiment");
  config["hidden"] = 64;
  cs::write_model_config(dir.file("m"), config);
  const auto back = cs::read_model_config(dir.file("m"), "sentiment", false);
  EXPECT_EQ(back["hidden"], 64);
  EXPECT_EQ(back["format_version"], cs::kModelFormatVersion);
  EXPECT_NE(exception_of([&] { cs::read_model_config(dir.file("m"), "ner", false); })
                .find("config.json: a 'sentiment' model, expected a 'ner' model"),
            std::string::npos);
  config["format_version"] = 99;
  cs::write_model_config(dir.file("m"), config);
  EXPECT_NE(exception_of([&] { cs::read_model_config(dir.file("m"), "sentiment", false); })
                .find("model format version 99, this cellstate reads version 1"),
            std::string::npos);
  // A number no double holds is bad JSON too (found by fuzz/fuzz_model_files).
  cs::atomic_write(dir.file("m/config.json"), "{\"hidden\": 9e7333}");
  EXPECT_NE(exception_of([&] { cs::read_model_config(dir.file("m"), "sentiment", false); }).find("not valid JSON"),
            std::string::npos);
  cs::atomic_write(dir.file("m/config.json"), "{ not json");
  EXPECT_NE(exception_of([&] { cs::read_model_config(dir.file("m"), "sentiment", false); }).find("not valid JSON"),
            std::string::npos);
  EXPECT_NE(exception_of([&] { cs::read_model_config(dir.file("nothing"), "sentiment"); })
                .find("no such model directory"),
            std::string::npos);
  std::filesystem::create_directories(dir.file("empty"));
  EXPECT_NE(exception_of([&] { cs::read_model_config(dir.file("empty"), "sentiment", false); })
                .find("empty/config.json: missing file"),
            std::string::npos);
  EXPECT_NE(exception_of([&] { cs::config_get<int>(back, "layers", "c.json"); })
                .find("c.json: config: missing key \"layers\""),
            std::string::npos);
}

TEST(ModelDir, WeightsRoundTripHalfAndMismatch) {
  cs::TempDir dir;
  Tiny a(cs::Implementation::kCustom, 1), b(cs::Implementation::kCustom, 2);
  cs::save_weights(*a, dir.file("w.pt"));
  cs::load_weights(*b, dir.file("w.pt"));
  for (const auto& p : a->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), b->named_parameters()[p.key()]));
  cs::save_weights(*a, dir.file("h.pt"), /*half=*/true);
  EXPECT_LT(std::filesystem::file_size(dir.file("h.pt")), std::filesystem::file_size(dir.file("w.pt")));
  Tiny c(cs::Implementation::kCustom, 3);
  cs::load_weights(*c, dir.file("h.pt"));
  EXPECT_EQ(c->out->weight.dtype(), torch::kFloat32);
  EXPECT_LT((c->out->weight - a->out->weight).abs().max().item<double>(), 1e-3);

  // A model of another size: the error names the tensor and both shapes.
  auto other = cs::make_recurrent(cs::RecurrentOptions(8, 16));
  torch::nn::Module holder;
  holder.register_module("rnn", other);
  cs::save_weights(holder, dir.file("o.pt"));
  auto small = cs::make_recurrent(cs::RecurrentOptions(8, 12));
  torch::nn::Module holder2;
  holder2.register_module("rnn", small);
  // Verified by a manifest, the archive is read and the shapes compared;
  // unverified, its pickle is compared with the expected one before reading.
  EXPECT_NE(exception_of([&] { cs::load_weights(holder2, dir.file("o.pt"), /*verified=*/true); })
                .find("tensor 'rnn.weight_ih_l0' has shape [64, 8], the config expects [48, 8]"),
            std::string::npos);
  EXPECT_NE(exception_of([&] { cs::load_weights(holder2, dir.file("o.pt")); })
                .find("o.pt: the tensors' shapes or types are not the ones config.json describes"),
            std::string::npos);
  EXPECT_NE(exception_of([&] { cs::load_weights(*a, dir.file("o.pt")); }).find("no tensor 'embed.weight'"),
            std::string::npos);
  EXPECT_NE(exception_of([&] { cs::load_weights(*a, dir.file("missing.pt")); }).find("missing weights file"),
            std::string::npos);
  cs::atomic_write(dir.file("junk.pt"), "junk");
  EXPECT_NE(exception_of([&] { cs::load_weights(*a, dir.file("junk.pt")); }).find("not a readable weights file"),
            std::string::npos);
}

TEST(ModelDir, Int8WeightsRoundTripAsTheirQuantizedValues) {
  cs::TempDir dir;
  torch::manual_seed(5);
  auto rnn = cs::make_recurrent(cs::RecurrentOptions(48, 64).num_layers(2));
  torch::nn::Module a;
  a.register_module("rnn", rnn);
  a.register_parameter("tiny", torch::randn({4, 5}));  // < 1024 values: float32
  a.register_buffer("counts", torch::arange(6));
  cs::save_weights(a, dir.file("f.pt"));
  cs::save_weights(a, dir.file("q.pt"), cs::WeightStorage::kInt8);
  // int8 matrices, float32 scales and small tensors: well under a third.
  EXPECT_LT(std::filesystem::file_size(dir.file("q.pt")) * 3, std::filesystem::file_size(dir.file("f.pt")));

  auto rnn_b = cs::make_recurrent(cs::RecurrentOptions(48, 64).num_layers(2));
  torch::nn::Module b;
  b.register_module("rnn", rnn_b);
  b.register_parameter("tiny", torch::zeros({4, 5}));
  b.register_buffer("counts", torch::zeros({6}, torch::kLong));
  cs::load_weights(b, dir.file("q.pt"));  // unverified: the layout check knows int8 archives
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  for (const auto& p : pa) {
    const auto& w = p.value();
    const auto& got = pb[p.key()];
    EXPECT_EQ(got.scalar_type(), torch::kFloat) << p.key();
    if (w.dim() == 2 && w.numel() >= 1024) {
      // Per row: scale = max |row| / 127, values round(w / scale) * scale.
      const auto scale = w.abs().amax(1, true) / 127;
      const auto want = (w * scale.reciprocal()).round() * scale;
      EXPECT_LT((got - want).abs().max().item<double>(), 1e-6) << p.key();
      EXPECT_GT((got - w).abs().max().item<double>(), 0.0) << p.key() << " was not quantized";
      EXPECT_LE((got - w).abs().max().item<double>(), (scale / 2).max().item<double>() * 1.0001) << p.key();
    } else {
      EXPECT_TRUE(torch::equal(got, w)) << p.key() << " stays float32";
    }
  }
  EXPECT_TRUE(torch::equal(b.named_buffers()["counts"], torch::arange(6)));
  // Saved again from the widened values, the file is the same bytes: the
  // quantized values are a fixed point.
  cs::save_weights(b, dir.file("q2.pt"), cs::WeightStorage::kInt8);
  EXPECT_EQ(cs::read_file(dir.file("q2.pt")), cs::read_file(dir.file("q.pt")));

  // A damaged scale is refused, naming the tensor.
  torch::serialize::OutputArchive bad;
  torch::NoGradGuard no_grad;
  for (const auto& p : a.named_parameters()) {
    const auto& w = p.value();
    if (w.dim() == 2 && w.numel() >= 1024) {
      const auto scale = w.abs().amax(1) / 127;
      bad.write(p.key(), (w / scale.unsqueeze(1)).round().to(torch::kChar), false);
      bad.write(p.key() + ".int8_scale", p.key() == "rnn.weight_hh_l1" ? -scale : scale, true);
    } else {
      bad.write(p.key(), w, false);
    }
  }
  for (const auto& buffer : a.named_buffers()) bad.write(buffer.key(), buffer.value(), true);
  bad.save_to(dir.file("bad.pt"));
  EXPECT_NE(exception_of([&] { cs::load_weights(b, dir.file("bad.pt"), /*verified=*/true); })
                .find("tensor 'rnn.weight_hh_l1.int8_scale' holds scales that are not positive and finite"),
            std::string::npos);
}

// LibTorch's reader compiles the class definition stored in a weights
// archive, and a damaged one ("__paunmeters__ = [...]", found by
// cellstate_mutate_models) crashed its compiler: the records other than the
// tensors' are now compared with the ones LibTorch writes for the expected
// names before anything reads them.
TEST(ModelDir, DamagedArchiveRecordsAreInputErrorsNotCrashesOrHugeAllocations) {
  cs::TempDir dir;
  Tiny a(cs::Implementation::kCustom, 1);
  cs::save_weights(*a, dir.file("w.pt"));
  const std::string bytes = cs::read_file(dir.file("w.pt"));
  std::istringstream in(bytes);
  caffe2::serialize::PyTorchStreamReader reader(&in);
  auto rewrite = [&](const std::string& out, const std::string& from, const std::string& to,
                     const std::string& record = "code/__torch__.py") {
    std::string written;
    {
      caffe2::serialize::PyTorchStreamWriter writer([&](const void* data, size_t n) {
        written.append(static_cast<const char*>(data), n);
        return n;
      });
      for (const auto& name : reader.getAllRecords()) {
        if (name == "version") continue;  // the writer adds it
        auto [data, size] = reader.getRecord(name);
        std::string content(static_cast<const char*>(data.get()), size);
        if (name == record) {
          const size_t at = content.find(from);
          ASSERT_NE(at, std::string::npos);
          content.replace(at, from.size(), to);
        }
        writer.writeRecord(name, content.data(), content.size());
      }
      writer.writeEndOfFile();
    }
    cs::atomic_write(dir.file(out), written);
  };
  rewrite("same.pt", "__parameters__", "__parameters__");
  Tiny b(cs::Implementation::kCustom, 2);
  cs::load_weights(*b, dir.file("same.pt"));  // rewritten unchanged: still loads
  EXPECT_TRUE(torch::equal(a->out->weight, b->out->weight));
  rewrite("damaged.pt", "__parameters__", "__paunmeters__");
  EXPECT_NE(exception_of([&] { cs::load_weights(*b, dir.file("damaged.pt")); })
                .find("damaged.pt: not a cellstate weights file (record 'code/__torch__.py' is not the one written"),
            std::string::npos);
  rewrite("renamed.pt", "\"out.weight\"", "\"out.weigh\"");
  EXPECT_NE(exception_of([&] { cs::load_weights(*b, dir.file("renamed.pt")); })
                .find("renamed.pt: no tensor 'out.weight' (the weights do not fit the config)"),
            std::string::npos);
  // A pickle string whose length says 2 GB (cellstate_mutate_models saw
  // LibTorch's unpickler allocate 21 GB for one): refused before reading.
  rewrite("long.pt", std::string("\x0a\x00\x00\x00out.weight", 14), std::string("\xff\xff\xff\x7fout.weight", 14),
          "data.pkl");
  EXPECT_NE(exception_of([&] { cs::load_weights(*b, dir.file("long.pt")); })
                .find("long.pt: the tensors' shapes or types are not the ones config.json describes"),
            std::string::npos);
  // A zip directory entry that says the class definition inflates to 2.4 GB
  // (LibTorch's reader allocated it: 4.9 GB peak): refused from the
  // directory alone.
  std::string huge = bytes;
  const std::string name = "code/__torch__.py";
  bool patched = false;
  for (size_t at = huge.find("PK\x01\x02"); at != std::string::npos; at = huge.find("PK\x01\x02", at + 4)) {
    const size_t name_len = static_cast<uint8_t>(huge[at + 28]) | static_cast<uint8_t>(huge[at + 29]) << 8;
    const std::string entry = huge.substr(at + 46, name_len);
    if (entry.size() < name.size() || entry.compare(entry.size() - name.size(), name.size(), name) != 0) continue;
    huge.replace(at + 24, 4, std::string("\x97\x3f\x00\x92", 4));
    patched = true;
  }
  ASSERT_TRUE(patched);
  cs::atomic_write(dir.file("huge.pt"), huge);
  EXPECT_NE(exception_of([&] { cs::load_weights(*b, dir.file("huge.pt")); }).find("__torch__.py' declares 2449489815 bytes"),
            std::string::npos);
}

TEST(ModelDir, CustomWeightsLoadIntoBuiltinWithSamePredictions) {
  cs::TempDir dir;
  Tiny custom(cs::Implementation::kCustom, 4), builtin(cs::Implementation::kBuiltin, 5);
  cs::save_weights(*custom, dir.file("w.pt"));
  cs::load_weights(*builtin, dir.file("w.pt"));
  custom->eval();
  builtin->eval();
  torch::NoGradGuard g;
  auto batch = cs::pad_batch({{1, 2, 3, 4}, {5, 6}, {7, 8, 9}});
  auto x = custom->forward(batch.ids, batch.lengths), y = builtin->forward(batch.ids, batch.lengths);
  EXPECT_LT((x - y).abs().max().item<double>(), 1e-5);
}

TEST(Sha256, KnownDigests) {
  // FIPS 180-4 examples, and one message spanning several blocks fed in pieces.
  EXPECT_EQ(cs::sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(cs::sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(cs::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  cs::Sha256 h;
  const std::string a(1000, 'a');
  for (int i = 0; i < 1000; ++i) h.update(a);
  EXPECT_EQ(h.hex(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");  // a million 'a'
}

TEST(ModelDir, ManifestDetectsEveryChange) {
  cs::TempDir dir;
  const auto m = dir.file("m");
  cs::write_model_config(m, cs::new_model_config("sentiment"));
  cs::atomic_write(m + "/weights.pt", std::string(5000, 'w'));
  cs::write_manifest(m, "sentiment");
  EXPECT_NO_THROW(cs::read_model_config(m, "sentiment"));
  EXPECT_NE(exception_of([&] { cs::read_model_config(m, "ner"); })
                .find("MANIFEST.json: describes a \"sentiment\" model, expected a 'ner' model"),
            std::string::npos);
  // One byte changed, the size kept.
  std::string w(5000, 'w');
  w[2500] = 'x';
  cs::atomic_write(m + "/weights.pt", w);
  EXPECT_NE(exception_of([&] { cs::read_model_config(m, "sentiment"); })
                .find("weights.pt: damaged or changed since the model was written"),
            std::string::npos);
  EXPECT_NO_THROW(cs::read_model_config(m, "sentiment", false));
  cs::atomic_write(m + "/weights.pt", std::string(10, 'w'));
  EXPECT_NE(exception_of([&] { cs::read_model_config(m, "sentiment"); })
                .find("weights.pt: 10 bytes, MANIFEST.json records 5000"),
            std::string::npos);
  std::filesystem::remove(m + "/weights.pt");
  EXPECT_NE(exception_of([&] { cs::read_model_config(m, "sentiment"); })
                .find("weights.pt: missing (MANIFEST.json lists it)"),
            std::string::npos);
  cs::atomic_write(m + "/MANIFEST.json", "{\"files\": [{\"name\": \"../x\", \"bytes\": 1, \"sha256\": \"\"}], "
                                         "\"format_version\": 1, \"task\": \"sentiment\"}");
  EXPECT_NE(exception_of([&] { cs::read_model_config(m, "sentiment"); }).find("not a plain name"), std::string::npos);
  cs::atomic_write(m + "/MANIFEST.json", "[1, 2");
  EXPECT_NE(exception_of([&] { cs::read_model_config(m, "sentiment"); }).find("MANIFEST.json: not valid JSON"),
            std::string::npos);
  std::filesystem::remove(m + "/MANIFEST.json");
  EXPECT_NE(exception_of([&] { cs::read_model_config(m, "sentiment"); }).find("MANIFEST.json: missing"),
            std::string::npos);
}

TEST(ModelTransaction, CommitSwapsInAndFailureLeavesTheOldModel) {
  cs::TempDir dir;
  const auto m = dir.file("m");
  {
    cs::ModelTransaction t(m, "sentiment", {});
    EXPECT_EQ(t.path(), m + ".partial");
    EXPECT_FALSE(t.resuming());
    cs::write_model_config(t.path(), cs::new_model_config("sentiment"));
    cs::atomic_write(t.path() + "/weights.pt", "one");
    EXPECT_FALSE(std::filesystem::exists(m));
    t.commit();
    EXPECT_EQ(t.path(), m);
  }
  EXPECT_FALSE(std::filesystem::exists(m + ".partial"));
  EXPECT_EQ(cs::read_file(m + "/weights.pt"), "one");
  EXPECT_NO_THROW(cs::read_model_config(m, "sentiment"));
  // Without --overwrite an existing model is refused; with it, replaced as a whole.
  EXPECT_NE(exception_of([&] { cs::ModelTransaction t(m, "sentiment", {}); }).find("already holds a trained sentiment model"),
            std::string::npos);
  cs::ModelWriteOptions overwrite;
  overwrite.overwrite = true;
  {
    cs::ModelTransaction t(m, "sentiment", overwrite);
    cs::write_model_config(t.path(), cs::new_model_config("sentiment"));
    cs::atomic_write(t.path() + "/weights.pt", "two");
    // A second writer of the same directory fails at once, naming this process.
    EXPECT_NE(exception_of([&] { cs::ModelTransaction u(m, "sentiment", overwrite); })
                  .find("another process (PID " + std::to_string(::getpid()) + ")"),
              std::string::npos);
    // Destroyed without commit and without a checkpoint: nothing changes, nothing stays.
  }
  EXPECT_EQ(cs::read_file(m + "/weights.pt"), "one");
  EXPECT_FALSE(std::filesystem::exists(m + ".partial"));
  {
    cs::ModelTransaction t(m, "sentiment", overwrite);
    cs::write_model_config(t.path(), cs::new_model_config("sentiment"));
    cs::atomic_write(t.path() + "/weights.pt", "three");
    cs::atomic_write(t.path() + "/checkpoint.pt", "state");
  }
  // An interrupted run (a checkpoint) stays for --resume, and is not discarded silently.
  EXPECT_TRUE(std::filesystem::exists(m + ".partial/checkpoint.pt"));
  EXPECT_NE(exception_of([&] { cs::ModelTransaction t(m, "sentiment", {}); }).find("holds an interrupted training run"),
            std::string::npos);
  cs::ModelWriteOptions resume;
  resume.resume = true;
  {
    cs::ModelTransaction t(m, "sentiment", resume);
    EXPECT_TRUE(t.resuming());
    EXPECT_FALSE(t.resuming_finished());
    EXPECT_EQ(cs::read_file(t.path() + "/weights.pt"), "three");
    t.commit();
  }
  EXPECT_EQ(cs::read_file(m + "/weights.pt"), "three");
  EXPECT_TRUE(std::filesystem::exists(m + "/MANIFEST.json"));
  // A directory of someone else's files is never replaced.
  std::filesystem::create_directories(dir.file("notes"));
  cs::atomic_write(dir.file("notes/todo.txt"), "x");
  EXPECT_NE(exception_of([&] { cs::ModelTransaction t(dir.file("notes"), "sentiment", overwrite); })
                .find("holds files but no cellstate model"),
            std::string::npos);
}

TEST(AtomicWrite, StaleTemporariesOfDeadWritersAreRemoved) {
  cs::TempDir dir;
  // PID 2^22 + 1 is above Linux's pid_max limit: never a live process.
  cs::atomic_write(dir.file("f.txt.tmp.4194305"), "stale");
  cs::atomic_write(dir.file("f.txt"), "fresh");
  EXPECT_FALSE(std::filesystem::exists(dir.file("f.txt.tmp.4194305")));
  EXPECT_EQ(cs::read_file(dir.file("f.txt")), "fresh");
}
