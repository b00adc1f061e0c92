// BF16 -> NVFP4/MXFP4 checkpoint conversion (see quantize_checkpoint.h).
#include "weights/quantize_checkpoint.h"

#include <cstdio>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>

#include "formats/blocks.h"
#include "formats/codecs.h"
#include "formats/quantize.h"
#include "io/config.h"
#include "weights/linear.h"
#include "weights/names.h"

namespace fp4moe::weights {
namespace {

namespace fs = std::filesystem;
using io::Dtype;
using io::TensorSpec;

enum class Action : uint8_t { kCopy, kToBf16, kQuantize };

// One input tensor (or linear layer, or one expert's part of a stacked expert tensor) and the
// output tensors it becomes.
struct Item {
  Action action = Action::kCopy;
  io::TensorRef src;                  // the weight for linears
  int64_t row0 = 0, rows = 0, cols = 0;  // kQuantize: rows [row0, row0 + rows) of src seen as [*, cols]
  std::vector<TensorSpec> out;        // in write order
  uint64_t in_bytes() const {
    return action == Action::kQuantize ? static_cast<uint64_t>(rows * cols * io::dtype_size(src.info->dtype)) : src.info->nbytes();
  }
  uint64_t out_bytes() const {
    uint64_t n = 0;
    for (const TensorSpec& s : out) n += s.nbytes();
    return n;
  }
};

void write_json(const fs::path& p, const nlohmann::ordered_json& j) {
  std::FILE* f = std::fopen(p.string().c_str(), "wb");
  if (!f) throw io::CheckpointError(io::ErrorKind::kIo, p.string(), std::string("cannot create: ") + std::strerror(errno));
  const std::string s = j.dump(2) + "\n";
  const bool ok = std::fwrite(s.data(), 1, s.size(), f) == s.size();
  if (std::fclose(f) != 0 || !ok) throw io::CheckpointError(io::ErrorKind::kIo, p.string(), "write failed");
}

bool quantizable(const LinearTensors& l, const QuantizeCheckpointOptions& opt) {
  const Component c = component_of(canonical_name(l.module));
  if (opt.experts_only) return c == Component::kRoutedExperts;
  return c != Component::kEmbedding && c != Component::kHead && c != Component::kRouter && c != Component::kMtp;
}

std::vector<uint8_t> bf16_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t h = bf16_from_float(v[i]);
    std::memcpy(out.data() + 2 * i, &h, 2);
  }
  return out;
}

Item quantize_item(const io::TensorRef& src, const std::string& module, int64_t row0, int64_t rows, int64_t cols, bool nv) {
  Item it;
  it.action = Action::kQuantize;
  it.src = src;
  it.row0 = row0;
  it.rows = rows;
  it.cols = cols;
  const int64_t block = nv ? kNvfp4Block : kMxfp4Block;
  it.out.push_back({module + ".weight", Dtype::kU8, {rows, cols / 2}});
  it.out.push_back({module + ".weight_scale", nv ? Dtype::kF8_E4M3 : Dtype::kF8_E8M0, {rows, cols / block}});
  if (nv) it.out.push_back({module + ".weight_scale_2", Dtype::kF32, {}});
  return it;
}

// transformers' in-memory MoE layout stacks the experts: mlp.experts.gate_up_proj [E, 2I, H]
// (gate rows first) and mlp.experts.down_proj [E, H, I]. Each expert's part becomes its own
// quantized linear, named per expert (mlp.experts.E.gate_proj / up_proj / down_proj), which
// is how ModelOpt names them and what weights/names.h maps to ffn.experts.E.w1 / w3 / w2.
bool split_stacked_experts(const io::TensorRef& t, bool nv, std::vector<Item>& items, int64_t& quantized) {
  const std::string canon = canonical_name(t.info->name);
  const bool gate_up = canon.ends_with("ffn.experts.gate_up_proj"), down = canon.ends_with("ffn.experts.down_proj");
  const auto& s = t.info->shape;
  const int64_t block = nv ? kNvfp4Block : kMxfp4Block;
  if (!(gate_up || down) || s.size() != 3 || (t.info->dtype != Dtype::kBF16 && t.info->dtype != Dtype::kF32) || s[2] % block != 0 ||
      (gate_up && s[1] % 2 != 0))
    return false;
  const std::string& n = t.info->name;
  const std::string prefix = n.substr(0, n.rfind('.') + 1);  // "...experts."
  for (int64_t e = 0; e < s[0]; ++e) {
    const std::string m = prefix + std::to_string(e) + ".";
    if (gate_up) {
      const int64_t inter = s[1] / 2;
      items.push_back(quantize_item(t, m + "gate_proj", e * s[1], inter, s[2], nv));
      items.push_back(quantize_item(t, m + "up_proj", e * s[1] + inter, inter, s[2], nv));
      quantized += 2;
    } else {
      items.push_back(quantize_item(t, m + "down_proj", e * s[1], s[1], s[2], nv));
      quantized += 1;
    }
  }
  return true;
}

}  // namespace

QuantizeCheckpointResult quantize_checkpoint(const io::Checkpoint& in, const fs::path& out_dir,
                                             const QuantizeCheckpointOptions& opt,
                                             const std::function<void(uint64_t, uint64_t)>& progress) {
  const bool nv = opt.scheme == TargetScheme::kNVFP4;
  const int64_t block = nv ? kNvfp4Block : kMxfp4Block;
  const CheckpointLayout layout = scan_layout(in);
  if (!layout.problems.empty()) {
    const LayoutProblem& p = layout.problems.front();
    throw io::CheckpointError(io::ErrorKind::kUnsupported, p.file, "tensor '" + p.tensor + "': " + p.message);
  }

  // ---- plan -------------------------------------------------------------------------------
  QuantizeCheckpointResult res;
  std::vector<Item> items;
  for (const LinearTensors& l : layout.linears) {
    const io::TensorRef& w = *l.weight;
    if (l.format != MatrixFormat::kBF16)
      throw io::CheckpointError(io::ErrorKind::kUnsupported, w.file->path(),
                                "tensor '" + w.info->name + "' is already " + to_string(l.format) + ": quantize takes a BF16 checkpoint");
    if (quantizable(l, opt) && l.cols % block == 0) {
      if (w.info->dtype == Dtype::kF16)
        throw io::CheckpointError(io::ErrorKind::kUnsupported, w.file->path(), "tensor '" + w.info->name + "' is F16 (BF16 or F32 expected)");
      items.push_back(quantize_item(w, l.module, 0, l.rows, l.cols, nv));
      ++res.quantized;
      continue;
    }
    Item it;
    it.src = w;
    it.action = w.info->dtype == Dtype::kF32 ? Action::kToBf16 : Action::kCopy;
    it.out.push_back({w.info->name, it.action == Action::kToBf16 ? Dtype::kBF16 : w.info->dtype, w.info->shape});
    if (component_of(canonical_name(l.module)) != Component::kEmbedding) res.excluded.push_back(l.module);
    ++res.kept;
    items.push_back(std::move(it));
  }
  for (const io::TensorRef& t : layout.plain) {
    if (split_stacked_experts(t, nv, items, res.quantized)) continue;
    Item it;
    it.src = t;
    it.out.push_back({t.info->name, t.info->dtype, t.info->shape});
    ++res.kept;
    items.push_back(std::move(it));
  }

  // Shards in plan order; a shard closes once the next item would push it past shard_bytes.
  std::vector<std::pair<size_t, size_t>> shards;  // [first, last) item ranges
  uint64_t cur = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const uint64_t b = items[i].out_bytes();
    if (shards.empty() || (cur > 0 && cur + b > opt.shard_bytes)) {
      shards.push_back({i, i});
      cur = 0;
    }
    shards.back().second = i + 1;
    cur += b;
  }
  if (shards.empty()) throw io::CheckpointError(io::ErrorKind::kUnsupported, in.dir().string(), "the checkpoint holds no tensors");

  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw io::CheckpointError(io::ErrorKind::kIo, out_dir.string(), "cannot create the folder: " + ec.message());

  // ---- write --------------------------------------------------------------------------------
  uint64_t total_in = 0, done_in = 0;
  for (const Item& it : items) total_in += it.in_bytes();
  res.bytes_in = total_in;
  std::map<std::string, std::string> weight_map;
  for (size_t s = 0; s < shards.size(); ++s) {
    char name[64];
    if (shards.size() == 1) std::snprintf(name, sizeof name, "model.safetensors");
    else std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    std::vector<TensorSpec> specs;
    for (size_t i = shards[s].first; i < shards[s].second; ++i)
      for (const TensorSpec& t : items[i].out) {
        specs.push_back(t);
        weight_map[t.name] = name;
      }
    io::SafetensorsWriter wr(out_dir / name, specs, {{"format", "pt"}});
    for (size_t i = shards[s].first; i < shards[s].second; ++i) {
      const Item& it = items[i];
      if (it.action == Action::kCopy) {
        wr.write(it.out[0].name, it.src.bytes());
      } else if (it.action == Action::kToBf16) {
        wr.write(it.out[0].name, bf16_bytes(io::tensor_to_f32(it.src)));
      } else {
        const std::vector<float> w = io::tensor_to_f32(it.src, it.row0 * it.cols, it.rows * it.cols);
        const int64_t rows = it.rows, cols = it.cols;
        Matrix m;
        for (size_t k = 0; k < w.size(); ++k)
          if (w[k] != w[k])
            throw io::CheckpointError(io::ErrorKind::kUnsupported, it.src.file->path(),
                                      "tensor '" + it.src.info->name + "': NaN at element " + std::to_string(k));
        try {
          m = nv ? quantize_nvfp4_weight(w.data(), rows, cols) : quantize_mxfp4(w.data(), rows, cols);
        } catch (const std::invalid_argument& e) {
          throw io::CheckpointError(io::ErrorKind::kUnsupported, it.src.file->path(), "tensor '" + it.src.info->name + "': " + e.what());
        }
        wr.write(it.out[0].name, m.data);
        wr.write(it.out[1].name, m.scales);
        if (nv) {
          uint8_t g[4];
          std::memcpy(g, &m.ranges[0].global_scale, 4);
          wr.write(it.out[2].name, g);
        }
      }
      done_in += it.in_bytes();
      if (progress) progress(done_in, total_in);
    }
    wr.finish();
    res.bytes_out += wr.data_bytes();
    res.shards.push_back(name);
  }
  if (shards.size() > 1) io::write_shard_index(out_dir, weight_map, res.bytes_out);

  // ---- configs and the other files ------------------------------------------------------------
  const char* algo = nv ? "NVFP4" : "MXFP4";
  nlohmann::ordered_json q = {{"quant_algo", algo}, {"kv_cache_quant_algo", nullptr}, {"group_size", block},
                              {"exclude_modules", res.excluded}};
  write_json(out_dir / "hf_quant_config.json",
             {{"producer", {{"name", "fp4moe"}, {"version", opt.producer_version}}}, {"quantization", q}});
  const fs::path cfg = in.dir() / "config.json";
  if (fs::exists(cfg, ec)) {
    nlohmann::ordered_json c = nlohmann::ordered_json::parse(io::read_json_file(cfg).dump());
    nlohmann::ordered_json qc = q;
    qc["quant_method"] = "modelopt";
    c["quantization_config"] = qc;
    write_json(out_dir / "config.json", c);
  }
  if (!in.is_single_file())
    for (const auto& e : fs::directory_iterator(in.dir(), ec)) {
      const std::string f = e.path().filename().string();
      if (!e.is_regular_file() || e.path().extension() == ".safetensors" || f == "model.safetensors.index.json" ||
          f == "config.json" || f == "hf_quant_config.json")
        continue;
      fs::copy_file(e.path(), out_dir / f, fs::copy_options::overwrite_existing, ec);
      if (ec) throw io::CheckpointError(io::ErrorKind::kIo, (out_dir / f).string(), "cannot copy: " + ec.message());
    }
  return res;
}

}  // namespace fp4moe::weights
