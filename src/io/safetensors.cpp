// safetensors reader, writer and sharded checkpoints (see safetensors.h for the rules).
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "formats/codecs.h"
#include "io/config.h"

namespace fp4moe::io {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DtypeName {
  Dtype dtype;
  const char* name;
  int64_t size;
};
constexpr DtypeName kDtypes[] = {
    {Dtype::kBool, "BOOL", 1},       {Dtype::kU8, "U8", 1},         {Dtype::kI8, "I8", 1},
    {Dtype::kF8_E5M2, "F8_E5M2", 1}, {Dtype::kF8_E4M3, "F8_E4M3", 1}, {Dtype::kF8_E8M0, "F8_E8M0", 1},
    {Dtype::kI16, "I16", 2},         {Dtype::kU16, "U16", 2},       {Dtype::kF16, "F16", 2},
    {Dtype::kBF16, "BF16", 2},       {Dtype::kI32, "I32", 4},       {Dtype::kU32, "U32", 4},
    {Dtype::kF32, "F32", 4},         {Dtype::kF64, "F64", 8},       {Dtype::kI64, "I64", 8},
    {Dtype::kU64, "U64", 8},
};

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// RFC 3629 UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
bool valid_utf8(std::span<const uint8_t> s) {
  size_t i = 0;
  while (i < s.size()) {
    const uint8_t c = s[i];
    int n;
    uint32_t cp;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; }
    else return false;
    if (s.size() - i <= static_cast<size_t>(n)) return false;  // truncated sequence
    for (int k = 1; k <= n; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += static_cast<size_t>(n) + 1;
  }
  return true;
}

[[noreturn]] void fail(ErrorKind k, const std::string& file, const std::string& msg) { throw CheckpointError(k, file, msg); }

uint64_t checked_numel_bytes(const std::vector<int64_t>& shape, int64_t elem, bool* overflow) {
  uint64_t n = 1;
  *overflow = false;
  for (int64_t d : shape) {
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) { *overflow = true; return 0; }
  }
  if (__builtin_mul_overflow(n, static_cast<uint64_t>(elem), &n)) { *overflow = true; return 0; }
  return n;
}

TensorInfo parse_entry(const std::string& name, const json& v, const std::string& file) {
  const std::string where = "tensor '" + name + "'";
  if (!v.is_object()) fail(ErrorKind::kInvalidTensorEntry, file, where + ": entry is not a JSON object");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!v.contains(key)) fail(ErrorKind::kInvalidTensorEntry, file, where + ": no \"" + key + "\"");
  TensorInfo t;
  t.name = name;
  const json& d = v["dtype"];
  if (!d.is_string()) fail(ErrorKind::kInvalidTensorEntry, file, where + ": dtype is not a string");
  const auto dt = dtype_from_string(d.get_ref<const std::string&>());
  if (!dt) fail(ErrorKind::kUnknownDtype, file, where + ": unknown dtype \"" + d.get<std::string>() + "\"");
  t.dtype = *dt;
  const json& s = v["shape"];
  if (!s.is_array()) fail(ErrorKind::kInvalidTensorEntry, file, where + ": shape is not an array");
  for (const json& x : s) {
    if (!x.is_number_unsigned() || x.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      fail(ErrorKind::kInvalidTensorEntry, file, where + ": shape holds " + x.dump() + ", not a non-negative integer");
    t.shape.push_back(static_cast<int64_t>(x.get<uint64_t>()));
  }
  const json& o = v["data_offsets"];
  if (!o.is_array() || o.size() != 2 || !o[0].is_number_unsigned() || !o[1].is_number_unsigned())
    fail(ErrorKind::kInvalidTensorEntry, file, where + ": data_offsets is not a pair of non-negative integers");
  t.begin = o[0].get<uint64_t>();
  t.end = o[1].get<uint64_t>();
  return t;
}

}  // namespace

// ---- names -----------------------------------------------------------------------------------
const char* to_string(Dtype d) {
  for (const auto& e : kDtypes)
    if (e.dtype == d) return e.name;
  return "?";
}
std::optional<Dtype> dtype_from_string(std::string_view s) {
  for (const auto& e : kDtypes)
    if (s == e.name) return e.dtype;
  return std::nullopt;
}
int64_t dtype_size(Dtype d) {
  for (const auto& e : kDtypes)
    if (e.dtype == d) return e.size;
  return 0;
}

const char* to_string(ErrorKind k) {
  switch (k) {
    case ErrorKind::kIo: return "io";
    case ErrorKind::kHeaderTooSmall: return "header-too-small";
    case ErrorKind::kHeaderTooLarge: return "header-too-large";
    case ErrorKind::kInvalidHeaderLength: return "invalid-header-length";
    case ErrorKind::kInvalidHeader: return "invalid-header-utf8";
    case ErrorKind::kInvalidHeaderStart: return "invalid-header-start";
    case ErrorKind::kInvalidHeaderJson: return "invalid-header-json";
    case ErrorKind::kInvalidTensorEntry: return "invalid-tensor-entry";
    case ErrorKind::kUnknownDtype: return "unknown-dtype";
    case ErrorKind::kDuplicateName: return "duplicate-name";
    case ErrorKind::kInvalidMetadata: return "invalid-metadata";
    case ErrorKind::kInvalidOffset: return "invalid-offset";
    case ErrorKind::kValidationOverflow: return "validation-overflow";
    case ErrorKind::kTensorInvalidInfo: return "tensor-invalid-info";
    case ErrorKind::kMetadataIncompleteBuffer: return "metadata-incomplete-buffer";
    case ErrorKind::kTensorNotFound: return "tensor-not-found";
    case ErrorKind::kInvalidIndex: return "invalid-index";
    case ErrorKind::kInvalidConfig: return "invalid-config";
    case ErrorKind::kUnsupported: return "unsupported";
  }
  return "?";
}

CheckpointError::CheckpointError(ErrorKind kind, std::string file, const std::string& what)
    : std::runtime_error(file + ": " + what), kind_(kind), file_(std::move(file)), detail_(what) {}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

uint64_t TensorSpec::nbytes() const {
  bool overflow;
  const uint64_t n = checked_numel_bytes(shape, dtype_size(dtype), &overflow);
  if (overflow) throw std::invalid_argument("tensor '" + name + "': shape " + shape_str(shape) + " overflows");
  return n;
}

// ---- parsing ---------------------------------------------------------------------------------
Header parse_safetensors(std::span<const uint8_t> bytes, const std::string& file) {
  if (bytes.size() < 8)
    fail(ErrorKind::kHeaderTooSmall, file, "file is " + std::to_string(bytes.size()) + " bytes, shorter than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[static_cast<size_t>(i)];
  if (n > kMaxHeaderBytes)
    fail(ErrorKind::kHeaderTooLarge, file, "header length " + std::to_string(n) + " exceeds the 100 MB limit");
  if (n > bytes.size() - 8)
    fail(ErrorKind::kInvalidHeaderLength, file,
         "header length " + std::to_string(n) + " runs past the end of the file (" + std::to_string(bytes.size()) + " bytes)");
  const std::span<const uint8_t> text = bytes.subspan(8, n);
  if (!valid_utf8(text)) fail(ErrorKind::kInvalidHeader, file, "header is not valid UTF-8");
  if (text.empty() || text[0] != '{') fail(ErrorKind::kInvalidHeaderStart, file, "header does not start with '{'");

  // Names must be unique: nlohmann keeps the last of duplicate keys, so catch them while parsing.
  std::string duplicate;
  std::set<std::string> seen;
  auto on_event = [&](int depth, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::key && depth == 1 && duplicate.empty()) {
      std::string k = parsed.get<std::string>();
      if (!seen.insert(k).second) duplicate = std::move(k);
    }
    return true;
  };
  json h;
  try {
    h = json::parse(text.begin(), text.end(), on_event);
  } catch (const json::exception& e) {
    fail(ErrorKind::kInvalidHeaderJson, file, std::string("header is not valid JSON: ") + e.what());
  }
  if (!duplicate.empty()) fail(ErrorKind::kDuplicateName, file, "tensor name '" + duplicate + "' appears twice in the header");
  if (!h.is_object()) fail(ErrorKind::kInvalidHeaderJson, file, "header is not a JSON object");

  Header out;
  out.header_len = n;
  for (const auto& [key, v] : h.items()) {
    if (key == "__metadata__") {
      if (!v.is_object()) fail(ErrorKind::kInvalidMetadata, file, "__metadata__ is not an object");
      for (const auto& [mk, mv] : v.items()) {
        if (!mv.is_string()) fail(ErrorKind::kInvalidMetadata, file, "__metadata__ value of '" + mk + "' is not a string");
        out.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    out.tensors.push_back(parse_entry(key, v, file));
  }
  std::sort(out.tensors.begin(), out.tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return std::tie(a.begin, a.end) < std::tie(b.begin, b.end); });
  uint64_t pos = 0;
  for (const TensorInfo& t : out.tensors) {
    const std::string where = "tensor '" + t.name + "'";
    if (t.begin != pos || t.end < t.begin)
      fail(ErrorKind::kInvalidOffset, file,
           where + ": data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "] " +
               (t.end < t.begin ? "run backwards" : t.begin > pos ? "leave a hole after offset " + std::to_string(pos)
                                                                  : "overlap the previous tensor (ends at " + std::to_string(pos) + ")"));
    pos = t.end;
    bool overflow;
    const uint64_t want = checked_numel_bytes(t.shape, dtype_size(t.dtype), &overflow);
    if (overflow) fail(ErrorKind::kValidationOverflow, file, where + ": shape " + shape_str(t.shape) + " x " + to_string(t.dtype) + " overflows");
    if (want != t.nbytes())
      fail(ErrorKind::kTensorInvalidInfo, file,
           where + ": " + to_string(t.dtype) + " " + shape_str(t.shape) + " needs " + std::to_string(want) + " bytes but data_offsets span " +
               std::to_string(t.nbytes()));
  }
  const uint64_t data_len = bytes.size() - 8 - n;
  if (pos != data_len)
    fail(ErrorKind::kMetadataIncompleteBuffer, file,
         pos < data_len ? std::to_string(data_len - pos) + " bytes after the last tensor are not indexed by the header"
                        : "the tensors need " + std::to_string(pos) + " data bytes but the file holds " + std::to_string(data_len));
  return out;
}

// ---- mapped file ---------------------------------------------------------------------------
std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const fs::path& path) {
  const std::string p = path.string();
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // a FIFO must not block us
  if (fd < 0) fail(ErrorKind::kIo, p, std::string("cannot open: ") + std::strerror(errno));
  struct stat st{};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(ErrorKind::kIo, p, "not a regular file");
  }
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = p;
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ > 0) {
    void* m = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      ::close(fd);
      fail(ErrorKind::kIo, p, std::string("cannot map: ") + std::strerror(errno));
    }
    f->map_ = static_cast<const uint8_t*>(m);
  }
  ::close(fd);
  f->header_ = parse_safetensors({f->map_, f->size_}, p);  // on throw, ~SafetensorsFile unmaps
  for (size_t i = 0; i < f->header_.tensors.size(); ++i) f->index_.emplace(f->header_.tensors[i].name, i);
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

std::span<const uint8_t> SafetensorsFile::data(const TensorInfo& t) const {
  return {map_ + 8 + header_.header_len + t.begin, static_cast<size_t>(t.nbytes())};
}

// ---- checkpoints -----------------------------------------------------------------------------
Checkpoint Checkpoint::open(const fs::path& path, const OpenProgress& on_file) {
  Checkpoint c;
  std::error_code ec;
  const std::string p = path.string();
  if (!fs::exists(path, ec)) fail(ErrorKind::kIo, p, "no such file or folder");
  std::vector<fs::path> shard_paths;
  json weight_map;
  const fs::path index_path = path / "model.safetensors.index.json";
  const bool is_dir = fs::is_directory(path, ec);
  c.dir_ = is_dir ? path : path.parent_path().empty() ? fs::path(".") : path.parent_path();
  if (!is_dir) {
    c.single_file_ = true;
    shard_paths.push_back(path);
  } else if (fs::exists(index_path, ec)) {
    const std::string ip = index_path.string();
    json idx;
    try {
      idx = read_json_file(index_path);
    } catch (const CheckpointError& e) {
      if (e.kind() != ErrorKind::kInvalidConfig) throw;
      fail(ErrorKind::kInvalidIndex, ip, e.detail());
    }
    if (!idx.is_object() || !idx.contains("weight_map") || !idx["weight_map"].is_object())
      fail(ErrorKind::kInvalidIndex, ip, "no \"weight_map\" object");
    weight_map = idx["weight_map"];
    std::set<std::string> shards;
    for (const auto& [name, file] : weight_map.items()) {
      if (!file.is_string()) fail(ErrorKind::kInvalidIndex, ip, "weight_map entry '" + name + "' is not a file name");
      const std::string s = file.get<std::string>();
      if (s.empty() || s.find('/') != std::string::npos || s.find('\\') != std::string::npos || s == "." || s == "..")
        fail(ErrorKind::kInvalidIndex, ip, "weight_map entry '" + name + "' names '" + s + "', not a file in this folder");
      shards.insert(s);
    }
    for (const std::string& s : shards) shard_paths.push_back(path / s);
  } else {
    for (const auto& e : fs::directory_iterator(path, ec))
      if (e.path().extension() == ".safetensors") shard_paths.push_back(e.path());
    std::sort(shard_paths.begin(), shard_paths.end());
    if (shard_paths.empty()) fail(ErrorKind::kIo, p, "no .safetensors files in this folder");
  }
  for (size_t i = 0; i < shard_paths.size(); ++i) {
    if (on_file) on_file(i, shard_paths.size(), shard_paths[i].string());
    c.files_.push_back(SafetensorsFile::open(shard_paths[i]));
    const SafetensorsFile* f = c.files_.back().get();
    for (const TensorInfo& t : f->tensors()) {
      const auto [it, fresh] = c.by_name_.emplace(t.name, TensorRef{f, &t});
      if (!fresh)
        fail(ErrorKind::kDuplicateName, f->path(), "tensor '" + t.name + "' is also in " + it->second.file->path());
    }
  }
  if (!weight_map.is_null()) {
    const std::string ip = index_path.string();
    for (const auto& [name, file] : weight_map.items()) {
      const auto it = c.by_name_.find(name);
      if (it == c.by_name_.end() || fs::path(it->second.file->path()).filename() != file.get<std::string>())
        fail(ErrorKind::kInvalidIndex, ip, "tensor '" + name + "' is not in " + file.get<std::string>());
    }
    for (const auto& [name, ref] : c.by_name_)
      if (!weight_map.contains(name))
        fail(ErrorKind::kInvalidIndex, ip, "tensor '" + name + "' of " + ref.file->path() + " is not listed in the index");
  }
  for (const auto& [name, ref] : c.by_name_) c.names_.push_back(name);
  return c;
}

std::optional<TensorRef> Checkpoint::find(std::string_view name) const {
  const auto it = by_name_.find(name);
  if (it == by_name_.end()) return std::nullopt;
  return it->second;
}

TensorRef Checkpoint::at(std::string_view name) const {
  if (auto r = find(name)) return *r;
  fail(ErrorKind::kTensorNotFound, dir_.string(), "no tensor '" + std::string(name) + "'");
}

uint64_t Checkpoint::total_tensor_bytes() const {
  uint64_t n = 0;
  for (const auto& f : files_)
    for (const TensorInfo& t : f->tensors()) n += t.nbytes();
  return n;
}

// ---- writing -----------------------------------------------------------------------------
SafetensorsWriter::SafetensorsWriter(fs::path path, std::vector<TensorSpec> specs,
                                     const std::map<std::string, std::string>& metadata)
    : path_(std::move(path)), specs_(std::move(specs)) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::set<std::string> names;
  uint64_t off = 0;
  for (const TensorSpec& s : specs_) {
    if (s.name == "__metadata__" || !names.insert(s.name).second)
      throw std::invalid_argument(path_.string() + ": tensor name '" + s.name + "' is reserved or repeated");
    const uint64_t n = s.nbytes();
    h[s.name] = {{"dtype", to_string(s.dtype)}, {"shape", s.shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string text = h.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned, as the reference writer does
  tmp_ = path_;
  tmp_ += ".partial";
  f_ = std::fopen(tmp_.string().c_str(), "wb");
  if (!f_) fail(ErrorKind::kIo, tmp_.string(), std::string("cannot create: ") + std::strerror(errno));
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
  if (std::fwrite(len, 1, 8, f_) != 8 || std::fwrite(text.data(), 1, text.size(), f_) != text.size())
    fail(ErrorKind::kIo, tmp_.string(), "write failed");
}

SafetensorsWriter::~SafetensorsWriter() {
  if (f_) {
    std::fclose(f_);
    std::error_code ec;
    fs::remove(tmp_, ec);
  }
}

void SafetensorsWriter::write(std::string_view name, std::span<const uint8_t> bytes) {
  if (next_ >= specs_.size() || specs_[next_].name != name)
    throw std::logic_error(path_.string() + ": tensor '" + std::string(name) + "' written out of order");
  if (bytes.size() != specs_[next_].nbytes())
    throw std::logic_error(path_.string() + ": tensor '" + std::string(name) + "' has " + std::to_string(bytes.size()) +
                           " bytes, its spec says " + std::to_string(specs_[next_].nbytes()));
  if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f_) != bytes.size())
    fail(ErrorKind::kIo, tmp_.string(), "write failed (disk full?)");
  total_ += bytes.size();
  ++next_;
}

void SafetensorsWriter::finish() {
  if (next_ != specs_.size())
    throw std::logic_error(path_.string() + ": finish() with " + std::to_string(specs_.size() - next_) + " tensors unwritten");
  const bool ok = std::fclose(f_) == 0;
  f_ = nullptr;
  if (!ok) fail(ErrorKind::kIo, tmp_.string(), "close failed");
  std::error_code ec;
  fs::rename(tmp_, path_, ec);
  if (ec) fail(ErrorKind::kIo, path_.string(), "cannot rename from " + tmp_.string() + ": " + ec.message());
}

void write_safetensors(const fs::path& path, const std::vector<OwnedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<TensorSpec> specs;
  for (const OwnedTensor& t : tensors) specs.push_back(t.spec);
  SafetensorsWriter w(path, std::move(specs), metadata);
  for (const OwnedTensor& t : tensors) w.write(t.spec.name, t.bytes);
  w.finish();
}

void write_shard_index(const fs::path& dir, const std::map<std::string, std::string>& weight_map, uint64_t total_size) {
  const json idx = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
  const fs::path p = dir / "model.safetensors.index.json";
  std::FILE* f = std::fopen(p.string().c_str(), "wb");
  if (!f) fail(ErrorKind::kIo, p.string(), std::string("cannot create: ") + std::strerror(errno));
  const std::string text = idx.dump(2) + "\n";
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) fail(ErrorKind::kIo, p.string(), "write failed");
}

// ---- values ----------------------------------------------------------------------------------
std::vector<float> tensor_to_f32(const TensorRef& t) { return tensor_to_f32(t, 0, t.info->numel()); }

std::vector<float> tensor_to_f32(const TensorRef& t, int64_t first, int64_t count) {
  if (first < 0 || count < 0 || first + count > t.info->numel())
    throw std::out_of_range("tensor '" + t.info->name + "': elements [" + std::to_string(first) + ", " + std::to_string(first + count) +
                            ") out of range");
  const uint8_t* b = t.bytes().data() + first * dtype_size(t.info->dtype);
  std::vector<float> out(static_cast<size_t>(count));
  switch (t.info->dtype) {
    case Dtype::kBF16:
      for (int64_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, b + 2 * i, 2);
        out[static_cast<size_t>(i)] = bf16_to_float(h);
      }
      break;
    case Dtype::kF32: std::memcpy(out.data(), b, static_cast<size_t>(count) * 4); break;
    case Dtype::kF8_E4M3:
      for (int64_t i = 0; i < count; ++i) out[static_cast<size_t>(i)] = e4m3_to_float(b[i]);
      break;
    default:
      fail(ErrorKind::kUnsupported, t.file->path(),
           "tensor '" + t.info->name + "': dtype " + to_string(t.info->dtype) + " cannot be read as fp32 (BF16, F32 or F8_E4M3 expected)");
  }
  return out;
}

float scalar_f32(const TensorRef& t) {
  if (t.info->dtype != Dtype::kF32 || t.info->numel() != 1 || t.info->shape.size() > 1)
    fail(ErrorKind::kUnsupported, t.file->path(),
         "tensor '" + t.info->name + "': expected an F32 scalar, found " + to_string(t.info->dtype) + " " + shape_str(t.info->shape));
  float v;
  std::memcpy(&v, t.bytes().data(), 4);
  return v;
}

}  // namespace fp4moe::io
