// BF16 -> NVFP4/MXFP4 checkpoint conversion (see quantize_checkpoint.h).
#include "weights/quantize_checkpoint.h"

#include <algorithm>
#include <cmath>
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

// A value quantize will not write, refused as the NaN of a quantized layer is: naming the
// input file, the tensor and the element (its index in the input tensor).
[[noreturn]] void refuse_element(const io::TensorRef& t, int64_t element, const std::string& what, const std::string& why = "") {
  throw io::CheckpointError(io::ErrorKind::kUnsupported, t.file->path(),
                            "tensor '" + t.info->name + "': " + what + " at element " + std::to_string(element) + why);
}

const char* non_finite_name(float v) { return v != v ? "NaN" : v > 0 ? "Inf" : "-Inf"; }

// Refuses the first NaN or infinity of a tensor copied unchanged, read with the codecs the
// model reads it with (io::tensor_to_f32: BF16, F32, F8_E4M3), a chunk at a time. Integer
// tensors (tid2eid) have no such values; another float dtype (F16, ...) is one `run` refuses
// anyway, and the doctor names it (dtype).
void check_copied_finite(const io::TensorRef& t) {
  const Dtype dt = t.info->dtype;
  if (dt != Dtype::kBF16 && dt != Dtype::kF32 && dt != Dtype::kF8_E4M3) return;
  constexpr int64_t kChunk = int64_t{1} << 20;
  const int64_t n = t.info->numel();
  for (int64_t first = 0; first < n; first += kChunk) {
    const std::vector<float> v = io::tensor_to_f32(t, first, std::min(kChunk, n - first));
    for (size_t i = 0; i < v.size(); ++i)
      if (!std::isfinite(v[i])) refuse_element(t, first + static_cast<int64_t>(i), non_finite_name(v[i]));
  }
}

// An F32 tensor as BF16, refusing a NaN or infinity and a finite value that rounds to an
// infinity in BF16 (above 3.3961e38).
std::vector<uint8_t> bf16_bytes(const io::TensorRef& t, const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i])) refuse_element(t, static_cast<int64_t>(i), non_finite_name(v[i]));
    const uint16_t h = bf16_from_float(v[i]);
    if ((h & 0x7F80u) == 0x7F80u) {
      char num[32];
      std::snprintf(num, sizeof num, "%.9g", static_cast<double>(v[i]));
      refuse_element(t, static_cast<int64_t>(i), num, " overflows BF16 (this tensor stays unquantized and is written as BF16)");
    }
    std::memcpy(out.data() + 2 * i, &h, 2);
  }
  return out;
}

// Removes what a failed run wrote (see kQuantizeStagingDir): never throws.
struct OutputCleanup {
  fs::path staging;                  // removed whole, if this run created it
  std::vector<fs::path> moved;       // files already moved from staging into the output folder
  std::vector<fs::path> created;     // folders this run created (the output folder, parents), deepest first
  bool armed = true;
  ~OutputCleanup() {
    if (!armed) return;
    std::error_code ec;
    if (!staging.empty()) fs::remove_all(staging, ec);
    for (const fs::path& f : moved) fs::remove(f, ec);
    for (const fs::path& d : created) fs::remove(d, ec);  // only empty folders go
  }
};

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
// quantized linear, named per expert (mlp.experts.E.gate_proj / up_proj / down_proj, which
// is how ModelOpt names them and what weights/names.h maps to ffn.experts.E.w1 / w3 / w2; a
// stacked tensor under the saved ffn. prefix gets the saved names ffn.experts.E.w1 / w3 / w2).
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
  // Under an mlp. prefix transformers' names (gate_proj / up_proj / down_proj); under the saved
  // ffn. prefix the saved ones (w1 / w3 / w2), so that each stays one naming scheme.
  const bool saved = prefix.ends_with("ffn.experts.");
  const char* gate = saved ? "w1" : "gate_proj";
  const char* up = saved ? "w3" : "up_proj";
  const char* dn = saved ? "w2" : "down_proj";
  for (int64_t e = 0; e < s[0]; ++e) {
    const std::string m = prefix + std::to_string(e) + ".";
    if (gate_up) {
      const int64_t inter = s[1] / 2;
      items.push_back(quantize_item(t, m + gate, e * s[1], inter, s[2], nv));
      items.push_back(quantize_item(t, m + up, e * s[1] + inter, inter, s[2], nv));
      quantized += 2;
    } else {
      items.push_back(quantize_item(t, m + dn, e * s[1], s[1], s[2], nv));
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
  int64_t candidates = 0;  // linears of the kinds quantized (quantized, or kept for their shape)
  for (const LinearTensors& l : layout.linears) {
    const io::TensorRef& w = *l.weight;
    if (l.format != MatrixFormat::kBF16)
      throw io::CheckpointError(io::ErrorKind::kUnsupported, w.file->path(),
                                "tensor '" + w.info->name + "' is already " + to_string(l.format) + ": quantize takes a BF16 checkpoint");
    if (quantizable(l, opt)) ++candidates;
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
  const std::string in_name = in.is_single_file() && !in.files().empty() ? in.files().front()->path() : in.dir().string();
  if (shards.empty()) throw io::CheckpointError(io::ErrorKind::kUnsupported, in_name, "the checkpoint holds no tensors");
  // A run that quantizes nothing would write a checkpoint whose quantization config claims a
  // scheme none of its layers has: refused.
  if (res.quantized == 0) {
    const std::string kind = opt.experts_only ? "routed-expert linear layers" : "linear layers";
    throw io::CheckpointError(
        io::ErrorKind::kUnsupported, in_name,
        candidates > 0 ? "none of the checkpoint's " + std::to_string(candidates) + " " + kind + " has an input dimension divisible by " +
                             std::to_string(block) + ": nothing to quantize to " + (nv ? "NVFP4" : "MXFP4")
        : opt.experts_only ? "the checkpoint has no routed-expert linear layers (experts-only): nothing to quantize"
                           : "the checkpoint has no linear layers to quantize (embeddings, the LM head, the router and MTP layers stay unquantized)");
  }

  // ---- the output folder ----------------------------------------------------------------------
  // A failed run leaves the output folder as it found it, and an interrupted one leaves no
  // config.json without its shards. Everything (shards, index, configs, copied files) is written
  // into the staging folder OUT/.fp4moe-quantize.partial and moved up into OUT by renames (no
  // copying, one file system) only once all of it is written: the shards first, config.json
  // last. On any exception, OutputCleanup removes the staging folder, the files already moved
  // and the folders this run created (OUT and its missing parents). A run killed before the
  // moves leaves only the hidden staging folder, one killed during them that folder and some
  // files beside it; `fp4moe quantize` names the staging folder when it refuses that OUT. OUT
  // must be absent or empty, so nothing of another's is overwritten or removed; symlinks count
  // as existing (symlink_status), so a dangling one is never "created" here nor removed.
  if (const std::string why = output_folder_problem(out_dir); !why.empty())
    throw io::CheckpointError(io::ErrorKind::kIo, out_dir.string(), why);
  OutputCleanup cleanup;
  std::error_code ec;
  for (fs::path p = out_dir; !p.empty() && fs::symlink_status(p, ec).type() == fs::file_type::not_found; p = p.parent_path()) {
    cleanup.created.push_back(p);
    if (p == p.parent_path()) break;
  }
  fs::create_directories(out_dir, ec);
  if (ec) throw io::CheckpointError(io::ErrorKind::kIo, out_dir.string(), "cannot create the folder: " + ec.message());
  const fs::path stage = out_dir / kQuantizeStagingDir;
  if (!fs::create_directory(stage, ec) || ec)
    throw io::CheckpointError(io::ErrorKind::kIo, stage.string(), "cannot create the staging folder: " + (ec ? ec.message() : "it exists"));
  cleanup.staging = stage;
  std::vector<std::string> written;  // file names in stage, in the order they move into out_dir

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
    io::SafetensorsWriter wr(stage / name, specs, {{"format", "pt"}});
    for (size_t i = shards[s].first; i < shards[s].second; ++i) {
      const Item& it = items[i];
      if (it.action == Action::kCopy) {
        check_copied_finite(it.src);
        wr.write(it.out[0].name, it.src.bytes());
      } else if (it.action == Action::kToBf16) {
        wr.write(it.out[0].name, bf16_bytes(it.src, io::tensor_to_f32(it.src)));
      } else {
        const std::vector<float> w = io::tensor_to_f32(it.src, it.row0 * it.cols, it.rows * it.cols);
        const int64_t rows = it.rows, cols = it.cols;
        Matrix m;
        for (size_t k = 0; k < w.size(); ++k)  // the element's index in the (maybe stacked) input tensor
          if (!std::isfinite(w[k])) refuse_element(it.src, it.row0 * it.cols + static_cast<int64_t>(k), non_finite_name(w[k]));
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
    written.push_back(name);
  }
  if (shards.size() > 1) {
    io::write_shard_index(stage, weight_map, res.bytes_out);
    written.push_back("model.safetensors.index.json");
  }

  // ---- configs and the other files ------------------------------------------------------------
  if (!in.is_single_file())
    for (const auto& e : fs::directory_iterator(in.dir(), ec)) {
      const std::string f = e.path().filename().string();
      if (!e.is_regular_file() || e.path().extension() == ".safetensors" || f == "model.safetensors.index.json" ||
          f == "config.json" || f == "hf_quant_config.json")
        continue;
      fs::copy_file(e.path(), stage / f, fs::copy_options::overwrite_existing, ec);
      if (ec) throw io::CheckpointError(io::ErrorKind::kIo, (out_dir / f).string(), "cannot copy: " + ec.message());
      written.push_back(f);
    }
  const char* algo = nv ? "NVFP4" : "MXFP4";
  nlohmann::ordered_json q = {{"quant_algo", algo}, {"kv_cache_quant_algo", nullptr}, {"group_size", block},
                              {"exclude_modules", res.excluded}};
  write_json(stage / "hf_quant_config.json",
             {{"producer", {{"name", "fp4moe"}, {"version", opt.producer_version}}}, {"quantization", q}});
  written.push_back("hf_quant_config.json");
  const fs::path cfg = in.dir() / "config.json";
  if (fs::exists(cfg, ec)) {
    nlohmann::ordered_json c = nlohmann::ordered_json::parse(io::read_json_file(cfg).dump());
    nlohmann::ordered_json qc = q;
    qc["quant_method"] = "modelopt";
    c["quantization_config"] = qc;
    write_json(stage / "config.json", c);
    written.push_back("config.json");
  }

  // ---- everything is written: move it into out_dir, config.json last ----------------------------
  for (const std::string& f : written) {
    // Nothing that appeared in out_dir during the run is replaced (nor, on a later failure,
    // removed): only what this run moved is in cleanup.moved.
    if (fs::symlink_status(out_dir / f, ec).type() != fs::file_type::not_found)
      throw io::CheckpointError(io::ErrorKind::kIo, (out_dir / f).string(), "appeared in the output folder during the run: not overwritten");
    fs::rename(stage / f, out_dir / f, ec);
    if (ec) throw io::CheckpointError(io::ErrorKind::kIo, (out_dir / f).string(), "cannot move from " + (stage / f).string() + ": " + ec.message());
    cleanup.moved.push_back(out_dir / f);
  }
  fs::remove(stage, ec);
  if (ec) throw io::CheckpointError(io::ErrorKind::kIo, stage.string(), "cannot remove the staging folder: " + ec.message());
  cleanup.armed = false;
  return res;
}

std::string output_folder_problem(const fs::path& out_dir) {
  std::error_code ec;
  // symlink_status: a symlink, dangling or not, is something that exists (a dangling one
  // must be neither created through nor, after a failure, removed as if this run made it).
  const fs::file_status link = fs::symlink_status(out_dir, ec);
  if (link.type() == fs::file_type::not_found) return "";
  if (ec) return "cannot read the output folder: " + ec.message();
  const fs::file_status st = fs::status(out_dir, ec);
  if (fs::is_symlink(link) && st.type() == fs::file_type::not_found) return "output path is a symlink to a path that does not exist";
  if (ec) return "cannot read the output folder: " + ec.message();
  if (!fs::is_directory(st)) return "output path exists and is not a folder";
  bool any = false, staging = false;
  for (fs::directory_iterator d(out_dir, ec), end; !ec && d != end; d.increment(ec)) {
    any = true;
    staging |= d->path().filename() == kQuantizeStagingDir;
    if (staging) break;
  }
  if (ec) return "cannot read the output folder: " + ec.message();
  if (staging)
    return std::string("output folder holds ") + kQuantizeStagingDir +
           ", left by an interrupted quantize run (with any files it had moved out of it): remove the folder's contents";
  return any ? "output folder exists and is not empty" : "";
}

}  // namespace fp4moe::weights
