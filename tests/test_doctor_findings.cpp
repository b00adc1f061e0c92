// Doctor findings where the doctor and `run` used to disagree: a clean report must mean the
// checkpoint runs, and a tensor the doctor cannot read is a finding, never the end of the report.
//   - (`doctor --json` without a config.json: test_checkpoint_cli.cpp, which runs the binary)
//   - global / input scales of one F32 element in shapes other than [] (as run reads them)
//   - dtypes run refuses at load: F16 linear weights, F16 / I16 plain tensors, integer float
//     parameters, float expert-id tables
//   - an FP8-block ue8m0 block scale 0x00 (2^-127, a dead block): the e4m3 zero scale's finding
// Each planted fault is checked against run's own loader (model::load_v4_checkpoint,
// weights::load_matrix) as well as against the doctor's report.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>

#include "formats/quantize.h"
#include "io/config.h"
#include "io/quant_scheme.h"
#include "model/checkpoint_source.h"
#include "util/test_util.h"
#include "util/tiny_checkpoint.h"
#include "weights/doctor.h"
#include "weights/linear.h"
#include "weights/quantize_checkpoint.h"

namespace fp4moe {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::TempDir;
using weights::Severity;

io::OwnedTensor& named(std::vector<io::OwnedTensor>& t, const std::string& n) {
  for (io::OwnedTensor& x : t)
    if (x.spec.name == n) return x;
  throw std::runtime_error("no tensor " + n);
}

std::vector<uint8_t> f32_bytes(float v) {
  std::vector<uint8_t> b(4);
  std::memcpy(b.data(), &v, 4);
  return b;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

std::string all_findings(const weights::DoctorReport& r) {
  std::string s;
  for (const weights::Finding& f : r.findings)
    s += std::string("\n  ") + weights::to_string(f.severity) + " " + f.check + " " + f.tensor + " (" + f.file + "): " + f.message;
  return s;
}

// The findings of this check on this tensor.
std::vector<weights::Finding> findings_of(const weights::DoctorReport& r, const std::string& check, const std::string& tensor) {
  std::vector<weights::Finding> out;
  for (const weights::Finding& f : r.findings)
    if (f.check == check && f.tensor == tensor) out.push_back(f);
  return out;
}

// Exactly one error, of this check, on this tensor in this file.
void expect_only_error(const weights::DoctorReport& r, const std::string& check, const std::string& tensor, const fs::path& file,
                       const std::string& needle = "") {
  const auto hits = findings_of(r, check, tensor);
  ASSERT_EQ(hits.size(), 1u) << "finding " << check << " on " << tensor << all_findings(r);
  EXPECT_EQ(hits[0].severity, Severity::kError) << hits[0].message;
  EXPECT_EQ(hits[0].file, file.string());
  if (!needle.empty()) {
    EXPECT_NE(hits[0].message.find(needle), std::string::npos) << hits[0].message;
  }
  EXPECT_EQ(r.errors(), 1) << "only the planted fault may be an error:" << all_findings(r);
}

// Writes `t` with config.json (and hf_quant_config.json when given) into `at`; the doctor's
// report on it, as `fp4moe doctor` makes it.
weights::DoctorReport doctor_on(const fs::path& at, const std::vector<io::OwnedTensor>& t, const json* quant = nullptr) {
  fs::create_directories(at);
  io::write_safetensors(at / "model.safetensors", t);
  test::write_text(at / "config.json", test::tiny_v4_config().dump(2));
  if (quant) test::write_text(at / "hf_quant_config.json", quant->dump());
  const io::ModelConfig cfg = io::load_model_config(at);
  return weights::run_doctor(io::Checkpoint::open(at), &cfg, io::detect_quant_scheme(at, nullptr));
}

// Whether `run` loads the checkpoint (its error otherwise).
std::string run_load_error(const fs::path& dir) {
  try {
    (void)model::load_v4_checkpoint(dir);
    return "";
  } catch (const std::exception& e) {
    return std::string("refused: ") + e.what();
  }
}

// ---- 1. doctor --json without a config.json: test_checkpoint_cli.cpp (DoctorJsonWithoutConfigJson).

// ---- 2. scalars of one element -----------------------------------------------------------------
struct Quantized {
  TempDir dir;
  fs::path in() const { return dir.path() / "bf16"; }
  fs::path out() const { return dir.path() / "q"; }
};

std::unique_ptr<Quantized> make_nvfp4(std::mt19937_64& rng) {
  auto q = std::make_unique<Quantized>();
  test::write_tiny_v4(q->in(), rng);
  weights::quantize_checkpoint(io::Checkpoint::open(q->in()), q->out(), {});
  return q;
}

const weights::LinearTensors& linear_named(const weights::CheckpointLayout& lay, const std::string& module) {
  for (const weights::LinearTensors& l : lay.linears)
    if (l.module == module) return l;
  throw std::runtime_error("no linear " + module);
}

// weight_scale_2 is read as run reads it (io::scalar_f32 in weights::linear_global_scale): the
// doctor reports exactly the shapes run's loader refuses, as a finding on that tensor, and the
// report goes on with every other tensor's findings.
TEST(DoctorFindings, GlobalScaleShapesAsRunReadsThem) {
  test::SeededRng r;
  const auto q = make_nvfp4(r.rng);
  const json quant = io::read_json_file(q->out() / "hf_quant_config.json");
  const std::string m = "model.layers.1.ffn.experts.2.w1", other = "model.layers.2.ffn.experts.1.w2.weight_scale";
  TempDir d;
  int n = 0;
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{}, {1}, {1, 1}, {1, 1, 1}}) {
    SCOPED_TRACE(::testing::PrintToString(shape));
    std::vector<io::OwnedTensor> t = test::read_all(q->out());
    named(t, m + ".weight_scale_2").spec.shape = shape;
    named(t, other).bytes[3] = 0xFF;  // an e4m3 NaN block scale elsewhere: its finding must survive
    const fs::path at = d.path() / std::to_string(n++);
    weights::DoctorReport rep;
    ASSERT_NO_THROW(rep = doctor_on(at, t, &quant));
    // run's loader on that layer.
    const io::Checkpoint c = io::Checkpoint::open(at);
    const weights::CheckpointLayout lay = weights::scan_layout(c);
    bool run_accepts = true;
    try {
      (void)weights::load_matrix(linear_named(lay, m));
    } catch (const io::CheckpointError&) {
      run_accepts = false;
    }
    if (shape.size() <= 1) {
      EXPECT_TRUE(run_accepts);
    }
    const auto hits = findings_of(rep, "global-scale", m + ".weight_scale_2");
    EXPECT_EQ(hits.size(), run_accepts ? 0u : 1u) << all_findings(rep);
    for (const weights::Finding& f : hits) {
      EXPECT_EQ(f.severity, Severity::kError);
      EXPECT_EQ(f.file, (at / "model.safetensors").string());
      EXPECT_EQ(f.message.find("is F32 " + shape_str(shape) + ", expected an F32 scalar"), 0u) << f.message;
      EXPECT_NE(f.message.find("expected an F32 scalar (shape [] or [1])"), std::string::npos) << f.message;
    }
    EXPECT_EQ(findings_of(rep, "block-scale-nan", other).size(), 1u) << all_findings(rep);
    EXPECT_EQ(rep.errors(), run_accepts ? 1 : 2) << all_findings(rep);
  }
}

// run does not read input scales, so any shape holding one F32 value is that value: checked,
// and never the end of the report.
TEST(DoctorFindings, InputScaleOfOneElementInAnyShape) {
  test::SeededRng r;
  const auto q = make_nvfp4(r.rng);
  const json quant = io::read_json_file(q->out() / "hf_quant_config.json");
  const std::string m = "model.layers.1.ffn.experts.2.w1";
  TempDir d;
  const weights::DoctorReport base = doctor_on(d.path() / "base", test::read_all(q->out()), &quant);
  int n = 0;
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{1, 1}, {1, 1, 1}}) {
    SCOPED_TRACE(::testing::PrintToString(shape));
    for (float v : {0.01f, NAN}) {
      std::vector<io::OwnedTensor> t = test::read_all(q->out());
      t.push_back({{m + ".input_scale", io::Dtype::kF32, shape}, f32_bytes(v)});
      const fs::path at = d.path() / std::to_string(n++);
      weights::DoctorReport rep;
      ASSERT_NO_THROW(rep = doctor_on(at, t, &quant));
      if (std::isnan(v)) {
        expect_only_error(rep, "input-scale", m + ".input_scale", at / "model.safetensors", "input_scale is NaN");
      } else {
        EXPECT_EQ(rep.errors(), 0) << all_findings(rep);
        EXPECT_TRUE(run_load_error(at).empty()) << run_load_error(at);
      }
      EXPECT_EQ(rep.global_scales_checked, base.global_scales_checked + 1);
    }
  }
}

// ---- 3. dtypes run refuses at load ---------------------------------------------------------------
TEST(DoctorFindings, DtypesRunRefusesAreErrors) {
  test::SeededRng r;
  TempDir d;
  const std::vector<io::OwnedTensor> base = test::tiny_v4_tensors(r.rng);
  {
    const weights::DoctorReport rep = doctor_on(d.path() / "base", base);
    ASSERT_EQ(rep.errors(), 0) << all_findings(rep);
    ASSERT_EQ(rep.warnings(), 0) << all_findings(rep);
    ASSERT_EQ(run_load_error(d.path() / "base"), "");
  }
  struct Case {
    const char* tensor;
    io::Dtype dtype;
    const char* check;
    const char* needle;
  };
  const Case cases[] = {
      {"model.layers.0.attn.wq_a.weight", io::Dtype::kF16, "dtype", "F16 weights are not supported"},
      {"model.norm.weight", io::Dtype::kF16, "dtype", "is F16, which `run` cannot read as fp32"},
      {"model.norm.weight", io::Dtype::kI16, "dtype", "is I16, which `run` cannot read as fp32"},
      {"model.layers.1.attn.attn_sink", io::Dtype::kI32, "dtype", "is I32, integers where `run` reads float parameters"},
      {"model.layers.2.ffn.gate.bias", io::Dtype::kI64, "dtype", "is I64, integers where `run` reads float parameters"},
      {"model.layers.0.ffn.gate.tid2eid", io::Dtype::kF32, "tid2eid-range", "is F32, expected I64 or I32 expert ids"},
      {"model.layers.0.ffn.gate.tid2eid", io::Dtype::kBF16, "tid2eid-range", "is BF16, expected I64 or I32 expert ids"},
  };
  int n = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.tensor) + " as " + io::to_string(c.dtype));
    std::vector<io::OwnedTensor> t = base;
    io::OwnedTensor& x = named(t, c.tensor);
    x.spec.dtype = c.dtype;
    x.bytes.assign(x.spec.nbytes(), 0);  // zeros: valid values in every dtype (expert id 0, weight 0)
    const fs::path at = d.path() / std::to_string(n++);
    const weights::DoctorReport rep = doctor_on(at, t);
    expect_only_error(rep, c.check, c.tensor, at / "model.safetensors", c.needle);
    const std::string why = run_load_error(at);
    EXPECT_NE(why, "") << "run loads what the doctor reports";
    EXPECT_NE(why.find(c.tensor), std::string::npos) << why;
  }
  // F8_E4M3 is a dtype run reads as fp32: a norm stored so is clean for both.
  {
    std::vector<io::OwnedTensor> t = base;
    io::OwnedTensor& x = named(t, "model.norm.weight");
    x.spec.dtype = io::Dtype::kF8_E4M3;
    x.bytes.assign(x.spec.nbytes(), 0x38);  // 1.0
    const fs::path at = d.path() / "f8norm";
    const weights::DoctorReport rep = doctor_on(at, t);
    EXPECT_EQ(rep.errors(), 0) << all_findings(rep);
    EXPECT_EQ(run_load_error(at), "");
  }
}

// ---- 4. FP8-block ue8m0 0x00 ------------------------------------------------------------------
TEST(DoctorFindings, Fp8Ue8m0ZeroBlockScaleIsAZeroScale) {
  test::SeededRng r;
  TempDir d;
  const std::vector<float> w = test::random_bf16(r.rng, 256 * 512, 0.1f);
  Matrix f8 = quantize_fp8_block(w.data(), 256, 512, ScaleKind::kUe8m0);  // 2 x 4 ue8m0 block scales
  Matrix nv = quantize_nvfp4_weight(w.data(), 4, 64);                     // 4 x 4 e4m3 block scales
  f8.scales[5] = 0x00;                                                     // 2^-127 at [1, 1]
  nv.scales[5] = 0x00;                                                     // e4m3 zero at [1, 1]
  io::write_safetensors(d.path() / "m.safetensors",
                        {{{"b.weight", io::Dtype::kF8_E4M3, {256, 512}}, f8.data},
                         {{"b.weight_scale_inv", io::Dtype::kF8_E8M0, {2, 4}}, f8.scales},
                         {{"n.weight", io::Dtype::kU8, {4, 32}}, nv.data},
                         {{"n.weight_scale", io::Dtype::kF8_E4M3, {4, 4}}, nv.scales},
                         {{"n.weight_scale_2", io::Dtype::kF32, {}}, f32_bytes(nv.ranges[0].global_scale)}});
  const weights::DoctorReport rep = weights::run_doctor(io::Checkpoint::open(d.path()), nullptr, io::QuantScheme{});
  const auto fp8 = findings_of(rep, "block-scale-zero", "b.weight_scale_inv");
  const auto e4m3 = findings_of(rep, "block-scale-zero", "n.weight_scale");
  ASSERT_EQ(fp8.size(), 1u) << all_findings(rep);
  ASSERT_EQ(e4m3.size(), 1u) << all_findings(rep);
  EXPECT_EQ(fp8[0].severity, Severity::kError);
  EXPECT_EQ(fp8[0].severity, e4m3[0].severity);
  EXPECT_EQ(fp8[0].file, (d.path() / "m.safetensors").string());
  EXPECT_EQ(fp8[0].message, "1 zero block scale, first at [1, 1]: those blocks dequantize to 0");
  EXPECT_EQ(fp8[0].message, e4m3[0].message);
  EXPECT_EQ(rep.block_scales_checked, 8 + 16);
}

// A DeepSeek-native checkpoint (FP8 128x128 blocks, scale_fmt ue8m0 here): an NVFP4 layer is
// no part of that format (error); FP8 layers are clean whether their block scales are ue8m0 or
// fp32 (DeepSeek-V3.1 declares ue8m0 and stores power-of-two fp32 scales).
TEST(DoctorFindings, DeepSeekNativeSchemeMismatches) {
  test::SeededRng r;
  TempDir d;
  const std::vector<float> w = test::random_bf16(r.rng, 256 * 512, 0.1f);
  const Matrix ue = quantize_fp8_block(w.data(), 256, 512, ScaleKind::kUe8m0);
  const Matrix f32 = quantize_fp8_block(w.data(), 256, 512, ScaleKind::kF32);
  const Matrix nv = quantize_nvfp4_weight(w.data(), 4, 64);
  const fs::path file = d.path() / "m.safetensors";
  io::write_safetensors(file, {{{"a.weight", io::Dtype::kF8_E4M3, {256, 512}}, ue.data},
                               {{"a.weight_scale_inv", io::Dtype::kF8_E8M0, {2, 4}}, ue.scales},
                               {{"b.weight", io::Dtype::kF8_E4M3, {256, 512}}, f32.data},
                               {{"b.weight_scale_inv", io::Dtype::kF32, {2, 4}}, f32.scales},
                               {{"n.weight", io::Dtype::kU8, {4, 32}}, nv.data},
                               {{"n.weight_scale", io::Dtype::kF8_E4M3, {4, 4}}, nv.scales},
                               {{"n.weight_scale_2", io::Dtype::kF32, {}}, f32_bytes(nv.ranges[0].global_scale)}});
  const json cfg = {{"quantization_config", {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"weight_block_size", {128, 128}}, {"scale_fmt", "ue8m0"}}}};
  const io::QuantScheme scheme = io::parse_quant_config(cfg["quantization_config"], (d.path() / "config.json").string());
  ASSERT_EQ(scheme.kind, io::SchemeKind::kDeepSeekNative);
  const weights::DoctorReport rep = weights::run_doctor(io::Checkpoint::open(d.path()), nullptr, scheme);
  expect_only_error(rep, "scheme-mismatch", "n.weight", file, "stored as NVFP4");
  for (const char* t : {"a.weight", "a.weight_scale_inv", "b.weight", "b.weight_scale_inv"})
    EXPECT_TRUE(findings_of(rep, "scheme-mismatch", t).empty()) << t << all_findings(rep);
}

}  // namespace
}  // namespace fp4moe
