// What `fp4moe quantize` (weights::quantize_checkpoint) refuses, and what a refused run leaves
// behind: a NaN or infinity in any floating-point tensor it writes (quantized, converted from
// F32 to BF16, or copied), and an F32 value that overflows BF16, named by file, tensor and
// element; a run that would quantize no layer; a non-empty output folder. A failed run leaves
// the output folder as it was (absent, or empty), and while it runs the output folder holds
// nothing but the staging folder, so no partial checkpoint ever looks complete.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <set>
#include <stdexcept>

#include "formats/codecs.h"
#include "io/safetensors.h"
#include "model/checkpoint_source.h"
#include "util/test_util.h"
#include "util/tiny_checkpoint.h"
#include "weights/quantize_checkpoint.h"

namespace fp4moe {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

io::OwnedTensor& tensor(std::vector<io::OwnedTensor>& t, const std::string& name) {
  for (io::OwnedTensor& x : t)
    if (x.spec.name == name) return x;
  throw std::logic_error("no tensor " + name);
}

// The BF16 tensor t as F32 (exact).
io::OwnedTensor to_f32(const io::OwnedTensor& t) {
  io::OwnedTensor f{{t.spec.name, io::Dtype::kF32, t.spec.shape}, std::vector<uint8_t>(t.bytes.size() * 2)};
  for (size_t i = 0; i < t.bytes.size() / 2; ++i) {
    uint16_t h;
    std::memcpy(&h, t.bytes.data() + 2 * i, 2);
    const float v = bf16_to_float(h);
    std::memcpy(f.bytes.data() + 4 * i, &v, 4);
  }
  return f;
}

void set_f32(io::OwnedTensor& t, int64_t i, float v) { std::memcpy(t.bytes.data() + 4 * i, &v, 4); }
void set_bf16(io::OwnedTensor& t, int64_t i, uint16_t h) { std::memcpy(t.bytes.data() + 2 * i, &h, 2); }

// A checkpoint folder: model.safetensors with t, and the tiny config.json.
fs::path write_checkpoint(const fs::path& dir, const std::vector<io::OwnedTensor>& t) {
  fs::create_directories(dir);
  io::write_safetensors(dir / "model.safetensors", t, {{"format", "pt"}});
  test::write_text(dir / "config.json", test::tiny_v4_config().dump(2));
  return dir;
}

// The tiny BF16 checkpoint in d/in, as quantize's input.
fs::path tiny_input(const TempDir& d, std::mt19937_64& rng) {
  const fs::path in = d.path() / "in";
  test::write_tiny_v4(in, rng);
  return in;
}

// Every path under dir, relative, sorted (folders too).
std::set<std::string> listing(const fs::path& dir) {
  std::set<std::string> s;
  for (const auto& e : fs::recursive_directory_iterator(dir)) s.insert(fs::relative(e.path(), dir).string());
  return s;
}

struct Refusal {
  bool thrown = false;
  std::string file, detail;
};

// Runs quantize_checkpoint expecting a CheckpointError; its file and message without the file.
Refusal quantize_refused(const fs::path& in, const fs::path& out, const weights::QuantizeCheckpointOptions& opt = {},
                         const std::function<void(uint64_t, uint64_t)>& progress = {}) {
  Refusal r;
  try {
    weights::quantize_checkpoint(io::Checkpoint::open(in), out, opt, progress);
  } catch (const io::CheckpointError& e) {
    r.thrown = true;
    r.file = e.file();
    r.detail = e.detail();
  }
  return r;
}

// ---- bug 1: non-finite values in the tensors kept unquantized ----------------------------------
TEST(QuantizeErrors, NonFiniteValuesInAnyWrittenTensorAreRefusedByElement) {
  test::SeededRng r;
  TempDir d;
  const std::vector<io::OwnedTensor> base = test::tiny_v4_tensors(r.rng);
  const std::string router = "model.layers.0.ffn.gate.weight";  // kept unquantized (BF16)
  struct Case {
    const char* what;
    std::function<void(std::vector<io::OwnedTensor>&)> plant;
    std::string tensor, detail;
  };
  const std::vector<Case> cases = {
      {"F32 router: finite, but +Inf once rounded to BF16",
       [&](auto& t) { tensor(t, router) = to_f32(tensor(t, router)); set_f32(tensor(t, router), 5, 3.4e38f); }, router,
       "tensor '" + router + "': 3.39999995e+38 at element 5 overflows BF16 (this tensor stays unquantized and is written as BF16)"},
      {"F32 router: NaN", [&](auto& t) { tensor(t, router) = to_f32(tensor(t, router)); set_f32(tensor(t, router), 9, NAN); }, router,
       "tensor '" + router + "': NaN at element 9"},
      {"F32 router: -Inf",
       [&](auto& t) { tensor(t, router) = to_f32(tensor(t, router)); set_f32(tensor(t, router), 0, -INFINITY); }, router,
       "tensor '" + router + "': -Inf at element 0"},
      {"BF16 router, copied: NaN", [&](auto& t) { set_bf16(tensor(t, router), 7, 0x7FC0); }, router,
       "tensor '" + router + "': NaN at element 7"},
      {"BF16 embedding, copied: +Inf", [&](auto& t) { set_bf16(tensor(t, "model.embed_tokens.weight"), 100, 0x7F80); },
       "model.embed_tokens.weight", "tensor 'model.embed_tokens.weight': Inf at element 100"},
      {"F32 plain tensor, copied: NaN", [&](auto& t) { set_f32(tensor(t, "model.layers.1.hc_ffn_fn"), 3, NAN); },
       "model.layers.1.hc_ffn_fn", "tensor 'model.layers.1.hc_ffn_fn': NaN at element 3"},
      {"quantized linear: +Inf (named by element, like its NaN)",
       [&](auto& t) { set_bf16(tensor(t, "model.layers.2.attn.wo_b.weight"), 70, 0x7F80); }, "model.layers.2.attn.wo_b.weight",
       "tensor 'model.layers.2.attn.wo_b.weight': Inf at element 70"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].what);
    std::vector<io::OwnedTensor> t = base;
    cases[i].plant(t);
    const fs::path in = write_checkpoint(d.path() / ("in" + std::to_string(i)), t), out = d.path() / ("out" + std::to_string(i));
    const Refusal e = quantize_refused(in, out);
    EXPECT_TRUE(e.thrown) << "quantize wrote the non-finite value";
    if (!e.thrown) continue;
    EXPECT_EQ(e.file, (in / "model.safetensors").string());
    EXPECT_EQ(e.detail, cases[i].detail);
    EXPECT_FALSE(fs::exists(out)) << "a refused run must leave no output folder";
  }

  // Integer tensors are not floats: tid2eid's bytes (here an F64 NaN pattern) are copied unchanged.
  std::vector<io::OwnedTensor> t = base;
  io::OwnedTensor& tid = tensor(t, "model.layers.0.ffn.gate.tid2eid");
  const uint64_t nan_bits = 0x7FF8000000000001ull;
  std::memcpy(tid.bytes.data() + 8, &nan_bits, 8);
  const fs::path in = write_checkpoint(d.path() / "int", t), out = d.path() / "int_out";
  weights::quantize_checkpoint(io::Checkpoint::open(in), out, {});
  const io::Checkpoint q = io::Checkpoint::open(out);
  const auto copied = q.at("model.layers.0.ffn.gate.tid2eid").bytes();
  EXPECT_TRUE(std::equal(copied.begin(), copied.end(), tid.bytes.begin(), tid.bytes.end()));
}

TEST(QuantizeErrors, StackedExpertNaNIsNamedByItsIndexInTheStackedTensor) {
  test::SeededRng r;
  TempDir d;
  std::vector<io::OwnedTensor> t = test::tiny_v4_tensors(r.rng);
  std::erase_if(t, [](const io::OwnedTensor& x) { return x.spec.name.starts_with("model.layers.1.ffn.experts."); });
  t.push_back(test::random_tensor(r.rng, "model.layers.1.mlp.experts.gate_up_proj", io::Dtype::kBF16, {4, 64, 64}, 0.02f));
  t.push_back(test::random_tensor(r.rng, "model.layers.1.mlp.experts.down_proj", io::Dtype::kBF16, {4, 64, 32}, 0.02f));
  const int64_t element = 2 * 64 * 32 + 5 * 32 + 7;  // expert 2, row 5, column 7
  set_bf16(tensor(t, "model.layers.1.mlp.experts.down_proj"), element, 0xFFC0);
  const fs::path in = write_checkpoint(d.path() / "in", t);
  const Refusal e = quantize_refused(in, d.path() / "out");
  ASSERT_TRUE(e.thrown);
  EXPECT_EQ(e.file, (in / "model.safetensors").string());
  EXPECT_EQ(e.detail, "tensor 'model.layers.1.mlp.experts.down_proj': NaN at element " + std::to_string(element));
  EXPECT_FALSE(fs::exists(d.path() / "out"));
}

// ---- bug 2: a failed run leaves no partial output ----------------------------------------------
// The tiny model plus a 4 MiB BF16 linear with a NaN in its last element, late in the plan: with
// 1 MiB shards, the first shard is complete before the NaN is read.
std::vector<io::OwnedTensor> with_late_nan(std::mt19937_64& rng) {
  std::vector<io::OwnedTensor> t = test::tiny_v4_tensors(rng);
  io::OwnedTensor big{{"model.layers.2.zz.weight", io::Dtype::kBF16, {1024, 2048}}, std::vector<uint8_t>(1024 * 2048 * 2)};
  for (int64_t i = 0; i < 1024 * 2048; ++i) set_bf16(big, i, 0x3C00);  // 1/128
  set_bf16(big, 1024 * 2048 - 1, 0x7FC0);
  t.push_back(std::move(big));
  return t;
}

TEST(QuantizeErrors, FailedRunRemovesEverythingItWrote) {
  test::SeededRng r;
  TempDir d;
  const fs::path in = write_checkpoint(d.path() / "in", with_late_nan(r.rng));
  test::write_text(in / "tokenizer.json", "{}");
  weights::QuantizeCheckpointOptions opt;
  opt.shard_bytes = 1 << 20;
  uint64_t progressed = 0;
  auto count = [&](uint64_t done, uint64_t) { progressed = done; };
  const std::string detail = "tensor 'model.layers.2.zz.weight': NaN at element " + std::to_string(1024 * 2048 - 1);

  // An output folder quantize creates, with parents: all of it removed again.
  const fs::path nested = d.path() / "a" / "b" / "out";
  Refusal e = quantize_refused(in, nested, opt, count);
  ASSERT_TRUE(e.thrown);
  EXPECT_EQ(e.file, (in / "model.safetensors").string());
  EXPECT_EQ(e.detail, detail);
  EXPECT_GT(progressed, 0u) << "the NaN must be met after shards were written, or this tests nothing";
  EXPECT_FALSE(fs::exists(d.path() / "a")) << "left: " << (fs::exists(nested) ? *listing(nested).begin() : "folders");

  // An output folder that exists, empty: it stays, empty.
  const fs::path empty = d.path() / "empty";
  fs::create_directories(empty);
  e = quantize_refused(in, empty, opt);
  ASSERT_TRUE(e.thrown);
  EXPECT_EQ(e.detail, detail);
  ASSERT_TRUE(fs::is_directory(empty));
  EXPECT_EQ(listing(empty), std::set<std::string>{});

  // Any failure, not only a refused value (here the caller's progress callback throws after the
  // first shard): nothing left either.
  const fs::path out = d.path() / "out";
  EXPECT_THROW(weights::quantize_checkpoint(io::Checkpoint::open(in), out, opt,
                                            [](uint64_t done, uint64_t) {
                                              if (done > (1u << 20)) throw std::runtime_error("stop");
                                            }),
               std::runtime_error);
  EXPECT_FALSE(fs::exists(out));

  // With the input fixed, a rerun into the same (empty) folder succeeds.
  std::vector<io::OwnedTensor> fixed = test::read_all(in / "model.safetensors");
  set_bf16(tensor(fixed, "model.layers.2.zz.weight"), 1024 * 2048 - 1, 0x3C00);
  io::write_safetensors(in / "model.safetensors", fixed, {{"format", "pt"}});
  const weights::QuantizeCheckpointResult res = weights::quantize_checkpoint(io::Checkpoint::open(in), empty, opt);
  EXPECT_EQ(res.shards.size(), 3u);
  EXPECT_EQ(listing(empty), (std::set<std::string>{"config.json", "hf_quant_config.json", "model-00001-of-00003.safetensors",
                                                   "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
                                                   "model.safetensors.index.json", "tokenizer.json"}));
  EXPECT_NO_THROW(io::Checkpoint::open(empty).at("model.layers.2.zz.weight_scale_2"));
}

TEST(QuantizeErrors, OutputFolderHoldsNoCheckpointUntilComplete) {
  test::SeededRng r;
  TempDir d;
  const fs::path in = tiny_input(d, r.rng);
  weights::QuantizeCheckpointOptions opt;
  opt.shard_bytes = 64 << 10;
  const fs::path out = d.path() / "out";
  int calls = 0;
  // While tensors are written (after shards were finished), OUT holds the staging folder alone.
  weights::quantize_checkpoint(io::Checkpoint::open(in), out, opt, [&](uint64_t, uint64_t) {
    ++calls;
    std::set<std::string> top;
    for (const auto& e : fs::directory_iterator(out)) top.insert(e.path().filename().string());
    ASSERT_EQ(top, std::set<std::string>{weights::kQuantizeStagingDir}) << "call " << calls;
  });
  EXPECT_GT(calls, 100);
  const std::set<std::string> got = listing(out);
  EXPECT_FALSE(got.count(weights::kQuantizeStagingDir));
  EXPECT_TRUE(got.count("config.json") && got.count("hf_quant_config.json") && got.count("model.safetensors.index.json"));
  EXPECT_NO_THROW(io::Checkpoint::open(out));
}

TEST(QuantizeErrors, NonEmptyOutputFolderIsRefusedAndLeftAlone) {
  test::SeededRng r;
  TempDir d;
  const fs::path in = tiny_input(d, r.rng);
  const fs::path out = d.path() / "out";
  fs::create_directories(out);
  test::write_text(out / "notes.txt", "mine");
  Refusal e = quantize_refused(in, out);
  ASSERT_TRUE(e.thrown) << "quantize wrote into a folder holding another's file";
  EXPECT_EQ(e.file, out.string());
  EXPECT_EQ(e.detail, "output folder exists and is not empty");
  EXPECT_EQ(listing(out), std::set<std::string>{"notes.txt"});

  // What an interrupted (killed) run leaves: named, and left alone.
  const fs::path killed = d.path() / "killed";
  fs::create_directories(killed / weights::kQuantizeStagingDir);
  e = quantize_refused(in, killed);
  ASSERT_TRUE(e.thrown);
  const std::string interrupted = std::string("output folder holds ") + weights::kQuantizeStagingDir +
                                  ", left by an interrupted quantize run (with any files it had moved out of it): remove the folder's contents";
  EXPECT_EQ(e.detail, interrupted);
  EXPECT_EQ(listing(killed), std::set<std::string>{weights::kQuantizeStagingDir});
  // Killed while moving files out of the staging folder: the shard beside it, named the same way.
  test::write_text(killed / "model.safetensors", "moved before the kill");
  e = quantize_refused(in, killed);
  ASSERT_TRUE(e.thrown);
  EXPECT_EQ(e.detail, interrupted);
}

// A dangling symlink as OUT (or above it) is refused and never removed: it is not a folder
// this run created.
TEST(QuantizeErrors, DanglingSymlinkOutputIsRefusedAndKept) {
  test::SeededRng r;
  TempDir d;
  const fs::path in = tiny_input(d, r.rng);
  const fs::path link = d.path() / "out";
  fs::create_symlink(d.path() / "nowhere" / "target", link);
  Refusal e = quantize_refused(in, link);
  ASSERT_TRUE(e.thrown);
  EXPECT_EQ(e.detail, "output path is a symlink to a path that does not exist");
  EXPECT_TRUE(fs::is_symlink(fs::symlink_status(link)));
  e = quantize_refused(in, link / "sub");  // below it: creating the folder fails, the link stays
  ASSERT_TRUE(e.thrown);
  EXPECT_TRUE(fs::is_symlink(fs::symlink_status(link)));
}

// A file that appears in OUT during the run is neither replaced by the move nor removed by
// the cleanup of the failure it causes; everything the run wrote is removed.
TEST(QuantizeErrors, FileAppearingInOutputDuringTheRunIsKept) {
  test::SeededRng r;
  TempDir d;
  const fs::path in = tiny_input(d, r.rng);
  const fs::path out = d.path() / "out";
  bool planted = false;
  const Refusal e = quantize_refused(in, out, {}, [&](uint64_t, uint64_t) {
    if (!planted) test::write_text(out / "config.json", "someone else's"), planted = true;
  });
  ASSERT_TRUE(planted);
  ASSERT_TRUE(e.thrown);
  EXPECT_EQ(e.file, (out / "config.json").string());
  EXPECT_EQ(e.detail, "appeared in the output folder during the run: not overwritten");
  EXPECT_EQ(listing(out), std::set<std::string>{"config.json"});
  std::ifstream f(out / "config.json");
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>()), "someone else's");
}

// Stacked experts under the saved ffn. prefix are written per expert under the saved names
// (ffn.experts.E.w1 / w3 / w2), which run loads; under mlp. under transformers' names.
TEST(QuantizeErrors, StackedExpertsKeepTheirNamingScheme) {
  test::SeededRng r;
  TempDir d;
  for (const std::string pre : {"ffn", "mlp"}) {
    SCOPED_TRACE(pre);
    std::vector<io::OwnedTensor> t = test::tiny_v4_tensors(r.rng);
    std::erase_if(t, [](const io::OwnedTensor& x) { return x.spec.name.starts_with("model.layers.1.ffn.experts."); });
    t.push_back(test::random_tensor(r.rng, "model.layers.1." + pre + ".experts.gate_up_proj", io::Dtype::kBF16, {4, 64, 64}, 0.02f));
    t.push_back(test::random_tensor(r.rng, "model.layers.1." + pre + ".experts.down_proj", io::Dtype::kBF16, {4, 64, 32}, 0.02f));
    const fs::path in = write_checkpoint(d.path() / (pre + "-in"), t), out = d.path() / (pre + "-out");
    weights::quantize_checkpoint(io::Checkpoint::open(in), out, {});
    const io::Checkpoint q = io::Checkpoint::open(out);
    const std::string m = "model.layers.1." + pre + ".experts.3.";
    for (const char* n : {"w1", "w3", "w2", "gate_proj", "up_proj", "down_proj"}) {
      const bool want = (pre == "ffn") == (std::string(n).size() == 2);
      EXPECT_EQ(q.find(m + n + ".weight").has_value(), want) << m + n;
    }
    EXPECT_NO_THROW(model::load_v4_checkpoint(out));
  }
}

// ---- bug 3: a run that quantizes nothing ---------------------------------------------------------
TEST(QuantizeErrors, NothingToQuantizeIsRefused) {
  test::SeededRng r;
  TempDir d;
  const std::vector<io::OwnedTensor> base = test::tiny_v4_tensors(r.rng);
  std::vector<io::OwnedTensor> no_experts = base;
  std::erase_if(no_experts, [](const io::OwnedTensor& x) { return x.spec.name.find(".ffn.experts.") != std::string::npos; });
  const fs::path in = write_checkpoint(d.path() / "no_experts", no_experts);
  weights::QuantizeCheckpointOptions experts_only;
  experts_only.experts_only = true;
  Refusal e = quantize_refused(in, d.path() / "o1", experts_only);
  ASSERT_TRUE(e.thrown) << "quantized 0 layers and wrote a checkpoint claiming NVFP4";
  EXPECT_EQ(e.file, in.string());
  EXPECT_EQ(e.detail, "the checkpoint has no routed-expert linear layers (experts-only): nothing to quantize");
  EXPECT_FALSE(fs::exists(d.path() / "o1"));
  // Without experts_only the same checkpoint still has layers to quantize.
  EXPECT_GT(weights::quantize_checkpoint(io::Checkpoint::open(in), d.path() / "o2", {}).quantized, 0);

  // Only layers that stay unquantized (embedding, head, routers), as a single file.
  std::vector<io::OwnedTensor> kept;
  for (const io::OwnedTensor& x : base)
    if (x.spec.name == "model.embed_tokens.weight" || x.spec.name == "head.weight" || x.spec.name.ends_with("ffn.gate.weight"))
      kept.push_back(x);
  io::write_safetensors(d.path() / "kept.safetensors", kept);
  e = quantize_refused(d.path() / "kept.safetensors", d.path() / "o3");
  ASSERT_TRUE(e.thrown);
  EXPECT_EQ(e.file, (d.path() / "kept.safetensors").string());
  EXPECT_EQ(e.detail, "the checkpoint has no linear layers to quantize (embeddings, the LM head, the router and MTP layers stay unquantized)");
  EXPECT_FALSE(fs::exists(d.path() / "o3"));

  // Routed experts whose input dimension MXFP4 cannot block (48, not a multiple of 32).
  std::vector<io::OwnedTensor> odd;
  for (int e2 = 0; e2 < 2; ++e2)
    odd.push_back(test::random_tensor(r.rng, "model.layers.0.ffn.experts." + std::to_string(e2) + ".w1.weight", io::Dtype::kBF16, {32, 48}, 0.02f));
  io::write_safetensors(d.path() / "odd.safetensors", odd);
  weights::QuantizeCheckpointOptions mx = experts_only;
  mx.scheme = weights::TargetScheme::kMXFP4;
  e = quantize_refused(d.path() / "odd.safetensors", d.path() / "o4", mx);
  ASSERT_TRUE(e.thrown);
  EXPECT_EQ(e.detail, "none of the checkpoint's 2 routed-expert linear layers has an input dimension divisible by 32: nothing to quantize to MXFP4");
  EXPECT_FALSE(fs::exists(d.path() / "o4"));
}

}  // namespace
}  // namespace fp4moe
