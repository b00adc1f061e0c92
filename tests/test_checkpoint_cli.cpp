// The fp4moe program's checkpoint commands end to end: a tiny BF16 DeepSeek-V4 checkpoint is
// quantized, inspected and doctored; planted faults and unreadable inputs give the documented
// exit codes (0 clean, 1 findings, 2 unreadable) with messages naming the file, never a signal.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "io/config.h"
#include "io/safetensors.h"
#include "util/test_util.h"
#include "util/tiny_checkpoint.h"

namespace fp4moe {
namespace {

namespace fs = std::filesystem;

struct CliRun {
  int code = -1;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

CliRun fp4moe_run(const test::TempDir& d, const std::string& args) {
#ifndef FP4MOE_BIN
  return {};
#else
  const fs::path o = d.path() / "stdout.txt", e = d.path() / "stderr.txt";
  const std::string cmd = std::string("'") + FP4MOE_BIN + "' " + args + " >'" + o.string() + "' 2>'" + e.string() + "'";
  const int st = std::system(cmd.c_str());
  CliRun r;
  EXPECT_TRUE(WIFEXITED(st)) << cmd << " ended by a signal";
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.out = slurp(o);
  r.err = slurp(e);
  return r;
#endif
}

class CheckpointCli : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef FP4MOE_BIN
    GTEST_SKIP() << "FP4MOE_BIN not set: the fp4moe binary is not known to this test";
#endif
  }
};

bool has(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

// Rewrites the tiny checkpoint's config.json at ck with one field set to v.
void set_config_field(const fs::path& ck, const std::string& field, const nlohmann::json& v) {
  nlohmann::json cfg = test::tiny_v4_config();
  cfg[field] = v;
  test::write_text(ck / "config.json", cfg.dump(2));
}

TEST_F(CheckpointCli, QuantizeInspectDoctor) {
  test::SeededRng r;
  test::TempDir d;
  const fs::path in = d.path() / "bf16", out = d.path() / "nvfp4";
  test::write_tiny_v4(in, r.rng);

  CliRun q = fp4moe_run(d, "quantize " + in.string() + " " + out.string() + " --scheme nvfp4");
  ASSERT_EQ(q.code, 0) << q.err;
  EXPECT_TRUE(has(q.out, "quantized 68 linear layers to NVFP4")) << q.out;

  CliRun i = fp4moe_run(d, "inspect " + out.string());
  ASSERT_EQ(i.code, 0) << i.err;
  EXPECT_TRUE(has(i.out, "DeepSeek-V4 (3 layers, hidden 64, 4 routed experts)")) << i.out;
  EXPECT_TRUE(has(i.out, "modelopt-nvfp4")) << i.out;
  EXPECT_TRUE(has(i.out, "routed experts")) << i.out;
  EXPECT_TRUE(has(i.out, "nvfp4")) << i.out;
  CliRun i1 = fp4moe_run(d, "inspect " + (out / "model.safetensors").string());
  EXPECT_EQ(i1.code, 0) << i1.err;

  CliRun doc = fp4moe_run(d, "doctor " + out.string());
  EXPECT_EQ(doc.code, 0) << doc.out << doc.err;
  EXPECT_TRUE(has(doc.out, "0 errors")) << doc.out;
  CliRun strict = fp4moe_run(d, "doctor --strict " + out.string());
  EXPECT_EQ(strict.code, 1) << "fused gate/up parts carry different global scales: a warning, an error under --strict";

  CliRun js = fp4moe_run(d, "doctor --json " + out.string());
  EXPECT_EQ(js.code, 0);
  const nlohmann::json j = nlohmann::json::parse(js.out);
  EXPECT_EQ(j["errors"], 0);
  EXPECT_EQ(j["linears"], 68 + 3 + 2);  // + the 3 routers and embed/head kept in BF16
  EXPECT_EQ(j["scheme"], "modelopt-nvfp4");

  // Plant an e4m3 NaN block scale.
  std::vector<io::OwnedTensor> t = test::read_all(out);
  for (io::OwnedTensor& x : t)
    if (x.spec.name == "model.layers.2.ffn.experts.1.w2.weight_scale") x.bytes[3] = 0xFF;
  io::write_safetensors(out / "model.safetensors", t);
  CliRun bad = fp4moe_run(d, "doctor --json " + out.string());
  EXPECT_EQ(bad.code, 1) << bad.out;
  const nlohmann::json b = nlohmann::json::parse(bad.out);
  ASSERT_EQ(b["errors"], 1) << bad.out;
  bool found = false;
  for (const auto& f : b["findings"])
    found |= f["check"] == "block-scale-nan" && f["tensor"] == "model.layers.2.ffn.experts.1.w2.weight_scale";
  EXPECT_TRUE(found) << bad.out;
  // run refuses it at load, naming the tensor and the scale ([row, block]: 2 blocks per row of w2),
  // instead of generating from NaN logits.
  CliRun gen = fp4moe_run(d, "run --model " + out.string() + " --prompt-ids 1,2 --max-new-tokens 2");
  EXPECT_EQ(gen.code, 2) << gen.out << gen.err;
  EXPECT_TRUE(has(gen.err, "model.layers.2.ffn.experts.1.w2.weight")) << gen.err;
  EXPECT_TRUE(has(gen.err, "block scale [1, 1] is NaN (e4m3 0xFF)")) << gen.err;
  EXPECT_FALSE(has(gen.out, "generated")) << gen.out;
}

// Without a config.json (a folder without one, or the .safetensors file itself) the JSON report
// is the text report's: architecture null, one no-config warning, exit 0 (1 under --strict).
TEST_F(CheckpointCli, DoctorJsonWithoutConfigJson) {
  test::SeededRng r;
  test::TempDir d;
  const fs::path ck = d.path() / "ck";
  test::write_tiny_v4(ck, r.rng);
  fs::remove(ck / "config.json");
  for (const fs::path& target : {ck, ck / "model.safetensors"}) {
    SCOPED_TRACE(target.string());
    const CliRun text = fp4moe_run(d, "doctor " + target.string());
    EXPECT_EQ(text.code, 0) << text.out << text.err;  // the no-config warning only
    const CliRun js = fp4moe_run(d, "doctor --json " + target.string());
    ASSERT_EQ(js.code, text.code) << js.out << js.err;
    const nlohmann::json j = nlohmann::json::parse(js.out);
    EXPECT_TRUE(j["architecture"].is_null()) << js.out;
    EXPECT_EQ(j["exit_code"], 0);
    EXPECT_EQ(j["errors"], 0);
    EXPECT_EQ(j["warnings"], 1);
    ASSERT_EQ(j["findings"].size(), 1u) << js.out;
    EXPECT_EQ(j["findings"][0]["check"], "no-config");
    EXPECT_EQ(j["findings"][0]["severity"], "warning");
    const CliRun strict = fp4moe_run(d, "doctor --json --strict " + target.string());
    EXPECT_EQ(strict.code, 1) << strict.out << strict.err;
    EXPECT_EQ(nlohmann::json::parse(strict.out)["exit_code"], 1);
  }
}

// run reads each layer's format from its tensors: a quantization config the doctor refuses
// (MXFP4 with NVFP4's group size) does not stop it, but it is said on stderr, naming the file.
TEST_F(CheckpointCli, RunWarnsOfAnUnreadableQuantizationConfig) {
  test::SeededRng r;
  test::TempDir d;
  const fs::path in = d.path() / "bf16", out = d.path() / "nvfp4";
  test::write_tiny_v4(in, r.rng);
  ASSERT_EQ(fp4moe_run(d, "quantize " + in.string() + " " + out.string() + " --scheme nvfp4").code, 0);
  const CliRun clean = fp4moe_run(d, "run --model " + out.string() + " --prompt-ids 1,2 --max-new-tokens 1");
  ASSERT_EQ(clean.code, 0) << clean.err;
  EXPECT_FALSE(has(clean.err, "warning")) << clean.err;
  nlohmann::json hq = io::read_json_file(out / "hf_quant_config.json");
  hq["quantization"]["quant_algo"] = "MXFP4";
  test::write_text(out / "hf_quant_config.json", hq.dump(2));
  EXPECT_EQ(fp4moe_run(d, "doctor " + out.string()).code, 2);
  const CliRun g = fp4moe_run(d, "run --model " + out.string() + " --prompt-ids 1,2 --max-new-tokens 1");
  EXPECT_EQ(g.code, 0) << g.err;
  EXPECT_TRUE(has(g.err, "warning: ") && has(g.err, (out / "hf_quant_config.json").string()) && has(g.err, "group_size 16"))
      << g.err;
  EXPECT_TRUE(has(g.out, "generated")) << g.out;
}

// run --logits-out: the file holds "ids" (prompt + generated) and "logits" [P + N, vocab] whose
// rows' argmax are the generated ids (greedy); a --logits-out folder that does not exist is
// refused before the generation, not after it.
TEST_F(CheckpointCli, RunWritesLogitsAndRefusesAMissingOrUnwritableFolderFirst) {
  test::SeededRng r;
  test::TempDir d;
  const fs::path ck = d.path() / "ck", lo = d.path() / "logits.safetensors";
  test::write_tiny_v4(ck, r.rng);
  const CliRun g = fp4moe_run(d, "run --model " + ck.string() + " --prompt-ids 3,1,4,1,5 --max-new-tokens 3 --logits-out " + lo.string());
  ASSERT_EQ(g.code, 0) << g.out << g.err;
  const io::Checkpoint c = io::Checkpoint::open(lo);
  const io::TensorRef ids = c.at("ids"), logits = c.at("logits");
  ASSERT_EQ(ids.info->dtype, io::Dtype::kI64);
  ASSERT_EQ(ids.info->shape, (std::vector<int64_t>{8}));
  ASSERT_EQ(logits.info->shape.size(), 2u);
  ASSERT_EQ(logits.info->shape[0], 8);
  const int64_t V = logits.info->shape[1];
  const auto ib = ids.bytes();
  std::vector<int64_t> id(8);
  std::memcpy(id.data(), ib.data(), 64);
  EXPECT_EQ((std::vector<int64_t>{id.begin(), id.begin() + 5}), (std::vector<int64_t>{3, 1, 4, 1, 5}));
  const std::vector<float> l = io::tensor_to_f32(logits);
  std::string gen = "generated:";
  for (int64_t row = 4; row < 7; ++row) {  // the logits after the last prompt token pick the first new token
    const int64_t next = std::max_element(l.begin() + row * V, l.begin() + (row + 1) * V) - (l.begin() + row * V);
    EXPECT_EQ(next, id[row + 1]) << "row " << row;
    gen += " " + std::to_string(next);
  }
  EXPECT_TRUE(has(g.out, gen)) << g.out << " vs " << gen;

  const CliRun bad = fp4moe_run(d, "run --model " + ck.string() + " --prompt-ids 1 --max-new-tokens 2 --logits-out " +
                                       (d.path() / "no" / "such" / "x.safetensors").string());
  EXPECT_EQ(bad.code, 2);
  EXPECT_TRUE(has(bad.err, "does not exist")) << bad.err;
  EXPECT_FALSE(has(bad.out, "generated")) << bad.out;

  // A folder where no file can be created: read-only for a user; /proc also for root.
  fs::path ro = d.path() / "ro";
  fs::create_directory(ro);
  fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
  if (geteuid() == 0) ro = "/proc";
  const CliRun unw = fp4moe_run(d, "run --model " + ck.string() + " --prompt-ids 1 --max-new-tokens 2 --logits-out " +
                                       (ro / "x.safetensors").string());
  fs::permissions(d.path() / "ro", fs::perms::owner_all);
  EXPECT_EQ(unw.code, 2);
  EXPECT_TRUE(has(unw.err, "cannot be written")) << unw.err;
  EXPECT_FALSE(has(unw.out, "generated")) << unw.out;
  // An existing file passes the probe and is overwritten by the run.
  const CliRun again = fp4moe_run(d, "run --model " + ck.string() + " --prompt-ids 2,7 --max-new-tokens 1 --logits-out " + lo.string());
  ASSERT_EQ(again.code, 0) << again.out << again.err;
  EXPECT_EQ(io::Checkpoint::open(lo).at("logits").info->shape[0], 3);
}

// A context of 16 positions (max_position_embeddings): 4 prompt tokens + 12 new ones run, 13 are
// refused before any generation.
TEST_F(CheckpointCli, RunRefusesMorePositionsThanTheContext) {
  test::SeededRng r;
  test::TempDir d;
  const fs::path ck = d.path() / "ck";
  test::write_tiny_v4(ck, r.rng);
  set_config_field(ck, "max_position_embeddings", 16);
  const CliRun ok = fp4moe_run(d, "run --model " + ck.string() + " --prompt-ids 1,2,3,4 --max-new-tokens 12");
  EXPECT_EQ(ok.code, 0) << ok.out << ok.err;
  const CliRun g = fp4moe_run(d, "run --model " + ck.string() + " --prompt-ids 1,2,3,4 --max-new-tokens 13");
  EXPECT_EQ(g.code, 2);
  EXPECT_TRUE(has(g.err, "4 prompt tokens + 13 new ones = 17 positions, past the model's context of 16")) << g.err;
  EXPECT_FALSE(has(g.out, "generated")) << g.out;
}

// --prompt-ids: every item must be a token id of the vocabulary; an empty item is refused, not
// skipped (a lost id would silently change the prompt). Exit 2, nothing generated.
TEST_F(CheckpointCli, RunRefusesBadPromptIds) {
  test::SeededRng r;
  test::TempDir d;
  const fs::path ck = d.path() / "ck";
  test::write_tiny_v4(ck, r.rng);
  const int64_t vocab = test::tiny_v4_config()["vocab_size"].get<int64_t>();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"1,,2", "item 2 is empty"},
      {"1,2,", "item 3 is empty"},
      {",1", "item 1 is empty"},
      {"1, ,2", "item 2 is empty"},
      {"1,x", "'x' is not a token id"},
      {"1,-3", "'-3' is not a token id"},
      {"2.5", "'2.5' is not a token id"},
      {"99999999999", "'99999999999' is not a token id"},
      {" ", "no token ids given"},
      {std::to_string(vocab), "token id " + std::to_string(vocab) + " is outside the vocabulary [0, " + std::to_string(vocab) + ")"},
  };
  for (const auto& [ids, want] : cases) {
    const CliRun g = fp4moe_run(d, "run --model " + ck.string() + " --prompt-ids '" + ids + "' --max-new-tokens 1");
    EXPECT_EQ(g.code, 2) << "'" << ids << "': " << g.out << g.err;
    EXPECT_TRUE(has(g.err, want)) << "'" << ids << "': " << g.err;
    EXPECT_FALSE(has(g.out, "generated")) << g.out;
  }
  // Spaces around ids are allowed.
  const CliRun ok = fp4moe_run(d, "run --model " + ck.string() + " --prompt-ids ' 1, 2 ,3' --max-new-tokens 1");
  EXPECT_EQ(ok.code, 0) << ok.out << ok.err;
}

// A config.json value the forward cannot use (rms_norm_eps = 0) is an error for both the doctor
// (config-invalid, exit 1) and run (exit 2, before any generation), naming the file and field.
TEST_F(CheckpointCli, DoctorAndRunRefuseAnUnusableConfigValue) {
  test::SeededRng r;
  test::TempDir d;
  const fs::path ck = d.path() / "ck";
  test::write_tiny_v4(ck, r.rng);
  const CliRun clean = fp4moe_run(d, "doctor --json " + ck.string());
  EXPECT_EQ(clean.code, 0) << clean.out;
  set_config_field(ck, "rms_norm_eps", 0.0);
  const CliRun doc = fp4moe_run(d, "doctor --json " + ck.string());
  EXPECT_EQ(doc.code, 1) << doc.out << doc.err;
  const nlohmann::json j = nlohmann::json::parse(doc.out);
  bool found = false;
  for (const auto& f : j["findings"])
    found |= f["check"] == "config-invalid" && f["severity"] == "error" && f["file"] == (ck / "config.json").string() &&
             has(f["message"].get<std::string>(), "rms_norm_eps must be > 0");
  EXPECT_TRUE(found) << doc.out;
  const CliRun g = fp4moe_run(d, "run --model " + ck.string() + " --prompt-ids 1,2 --max-new-tokens 2");
  EXPECT_EQ(g.code, 2);
  EXPECT_TRUE(has(g.err, (ck / "config.json").string()) && has(g.err, "rms_norm_eps must be > 0")) << g.err;
  EXPECT_FALSE(has(g.out, "generated")) << g.out;
}

// A dimension too large for any tensor's element count (hidden_size 2^40 overflowed int64 in the
// expected shapes) is a config error naming the field; a dimension that fits but does not match
// the weights names the tensor, the file that holds it and where the expected shape comes from.
TEST_F(CheckpointCli, RunRefusesAnOversizedDimensionAndNamesTheMisshapenTensorsFile) {
  test::SeededRng r;
  test::TempDir d;
  const fs::path ck = d.path() / "ck";
  test::write_tiny_v4(ck, r.rng);
  set_config_field(ck, "hidden_size", int64_t(1) << 40);
  const CliRun doc = fp4moe_run(d, "doctor --json " + ck.string());
  EXPECT_EQ(doc.code, 1) << doc.out << doc.err;
  EXPECT_TRUE(has(doc.out, "hidden_size must be at most 1048576, got 1099511627776")) << doc.out;
  const CliRun big = fp4moe_run(d, "run --model " + ck.string() + " --prompt-ids 1,2 --max-new-tokens 2");
  EXPECT_EQ(big.code, 2);
  EXPECT_TRUE(has(big.err, (ck / "config.json").string()) && has(big.err, "hidden_size must be at most 1048576")) << big.err;
  set_config_field(ck, "n_routed_experts", test::tiny_v4_config()["n_routed_experts"].get<int64_t>() + 1);
  const CliRun mis = fp4moe_run(d, "run --model " + ck.string() + " --prompt-ids 1,2 --max-new-tokens 2");
  EXPECT_EQ(mis.code, 2);
  EXPECT_TRUE(has(mis.err, "ffn.gate.weight in " + (ck / "model.safetensors").string() + " has shape") &&
              has(mis.err, "from the config"))
      << mis.err;
  EXPECT_FALSE(has(mis.out, "generated")) << mis.out;
}

// Finite weights whose products overflow fp32 (every head weight the largest finite bf16) give
// infinite or NaN logits: run stops at the first such position (exit 2) instead of printing the
// argmax of NaN, and says where.
TEST_F(CheckpointCli, RunStopsAtNonFiniteLogits) {
  test::SeededRng r;
  test::TempDir d;
  const fs::path ck = d.path() / "ck";
  test::write_tiny_v4(ck, r.rng);
  std::vector<io::OwnedTensor> t = test::read_all(ck / "model.safetensors");
  bool planted = false;
  for (io::OwnedTensor& x : t)
    if (x.spec.name == "head.weight") {
      ASSERT_EQ(x.spec.dtype, io::Dtype::kBF16);
      for (size_t i = 0; i + 1 < x.bytes.size(); i += 2) x.bytes[i] = 0x7F, x.bytes[i + 1] = 0x7F;  // 0x7F7F: 3.39e38
      planted = true;
    }
  ASSERT_TRUE(planted);
  io::write_safetensors(ck / "model.safetensors", t, {{"format", "pt"}});
  const CliRun g = fp4moe_run(d, "run --model " + ck.string() + " --prompt-ids 1,2,3 --max-new-tokens 2");
  EXPECT_EQ(g.code, 2) << g.out << g.err;
  EXPECT_TRUE(has(g.err, "the logits of position 0 (token 0) are ")) << g.err;  // all head rows equal
  EXPECT_TRUE(has(g.err, "the forward overflowed (every stored value was finite at load") && has(g.err, "doctor --scan-weights"))
      << g.err;
  EXPECT_FALSE(has(g.out, "generated")) << g.out;
}

// A hash-routing table naming an expert the layer does not have: the doctor reports it
// (tid2eid-range, exit 1) and run refuses it at load with the table's position (exit 2).
TEST_F(CheckpointCli, ExpertIdsOutsideTheLayerAreFound) {
  test::SeededRng r;
  test::TempDir d;
  const fs::path ck = d.path() / "ck";
  test::write_tiny_v4(ck, r.rng);
  const int64_t experts = test::tiny_v4_config()["n_routed_experts"].get<int64_t>();
  std::vector<io::OwnedTensor> t = test::read_all(ck / "model.safetensors");
  bool planted = false;
  for (io::OwnedTensor& x : t)
    if (x.spec.name == "model.layers.0.ffn.gate.tid2eid") {
      ASSERT_EQ(x.spec.dtype, io::Dtype::kI64);
      const int64_t bad[2] = {experts, -1};  // at [5, 1] and [9, 0]
      std::memcpy(x.bytes.data() + (5 * 2 + 1) * 8, &bad[0], 8);
      std::memcpy(x.bytes.data() + (9 * 2 + 0) * 8, &bad[1], 8);
      planted = true;
    }
  ASSERT_TRUE(planted);
  io::write_safetensors(ck / "model.safetensors", t, {{"format", "pt"}});
  const CliRun doc = fp4moe_run(d, "doctor --json " + ck.string());
  EXPECT_EQ(doc.code, 1) << doc.out << doc.err;
  const std::string want = "2 expert ids outside [0, " + std::to_string(experts) + "), first " + std::to_string(experts) + " at [5, 1]";
  const nlohmann::json j = nlohmann::json::parse(doc.out);
  bool found = false;
  for (const auto& f : j["findings"])
    found |= f["check"] == "tid2eid-range" && f["tensor"] == "model.layers.0.ffn.gate.tid2eid" &&
             has(f["message"].get<std::string>(), want);
  EXPECT_TRUE(found) << doc.out;
  const CliRun g = fp4moe_run(d, "run --model " + ck.string() + " --prompt-ids 1,2 --max-new-tokens 1");
  EXPECT_EQ(g.code, 2);
  EXPECT_TRUE(has(g.err, "layer 0 tid2eid holds expert id " + std::to_string(experts) + " at [5, 1] (token, slot), outside [0, " +
                             std::to_string(experts) + ")"))
      << g.err;
  EXPECT_FALSE(has(g.out, "generated")) << g.out;
}

TEST_F(CheckpointCli, UnreadableInputExitsTwoNamingTheFile) {
  test::SeededRng r;
  test::TempDir d;
  const fs::path ck = d.path() / "ck";
  test::write_tiny_v4(ck, r.rng);
  // Truncate the data: the last tensor runs past the end.
  const fs::path f = ck / "model.safetensors";
  fs::resize_file(f, fs::file_size(f) - 3);
  for (const std::string cmd : {"inspect ", "doctor ", "doctor --json "}) {
    const CliRun x = fp4moe_run(d, cmd + ck.string());
    EXPECT_EQ(x.code, 2) << cmd;
    EXPECT_TRUE(has(x.err, f.string())) << x.err;
  }
  const CliRun qz = fp4moe_run(d, "quantize " + ck.string() + " " + (d.path() / "o").string());
  EXPECT_EQ(qz.code, 2);
  EXPECT_TRUE(has(qz.err, f.string())) << qz.err;

  // Not a safetensors file at all, a missing path, an unsupported architecture.
  test::write_text(d.path() / "junk.safetensors", std::string(64, '\xff'));
  EXPECT_EQ(fp4moe_run(d, "inspect " + (d.path() / "junk.safetensors").string()).code, 2);
  EXPECT_EQ(fp4moe_run(d, "doctor " + (d.path() / "nope").string()).code, 2);
  const fs::path ck2 = d.path() / "ck2";
  test::write_tiny_v4(ck2, r.rng);
  test::write_text(ck2 / "config.json", R"({"model_type": "llama"})");
  const CliRun u = fp4moe_run(d, "inspect " + ck2.string());
  EXPECT_EQ(u.code, 2);
  EXPECT_TRUE(has(u.err, "unsupported architecture")) << u.err;
  EXPECT_TRUE(has(u.err, (ck2 / "config.json").string())) << u.err;
  // A FIFO named like a checkpoint must not hang the reader.
  const fs::path fifo = d.path() / "fifo.safetensors";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const CliRun ff = fp4moe_run(d, "inspect " + fifo.string());
  EXPECT_EQ(ff.code, 2);
  EXPECT_TRUE(has(ff.err, "not a regular file")) << ff.err;
  // Quantizing into a folder that already holds files.
  EXPECT_EQ(fp4moe_run(d, "quantize " + (d.path() / "ck2").string() + " " + ck.string()).code, 2);
}

}  // namespace
}  // namespace fp4moe
