// Per-sequence decode state of DeepSeek-V4 (spec section 10). With it, running a sequence in
// chunks of any sizes (1 token at a time, or all at once) gives the same logits as one
// prefill: everything a later token can see is kept here.
#pragma once

#include <cstdint>
#include <vector>

namespace fp4moe::model {

// One compressor (CSA/HCA main branch, or the CSA indexer's).
struct CompressorState {
  int64_t proj_width = 0;          // parts * entry width: the row width of the raw projections
  std::vector<float> buf_kv;       // raw K rows of the unfinished window [buf_rows, proj_width]
  std::vector<float> buf_gate;     // raw G rows (position bias not yet added)
  int64_t buf_rows = 0;
  std::vector<float> overlap_kv;   // CSA: K rows of the last complete window [ratio, proj_width]
  std::vector<float> overlap_gate; // CSA: G + position bias of that window
  std::vector<float> entries;      // emitted entries [count, width], post-norm, post-RoPE
  int64_t count = 0;
};

struct LayerState {
  std::vector<float> window;  // the last <= sliding_window - 1 KV rows [window_rows, head_dim]
  int64_t window_rows = 0;
  CompressorState compressor;  // CSA and HCA
  CompressorState indexer;     // CSA only
};

struct SequenceState {
  int64_t length = 0;  // tokens seen so far (the next token's position)
  std::vector<LayerState> layers;
};

}  // namespace fp4moe::model
