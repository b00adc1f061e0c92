// A one-line progress bar on stderr for commands that read or write large checkpoints. Drawn
// only when stderr is a terminal (logs and tests stay clean), redrawn at most every 100 ms.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace fp4moe::cli {

class ProgressBar {
 public:
  explicit ProgressBar(std::string label) : label_(std::move(label)), enabled_(::isatty(STDERR_FILENO) == 1) {}
  ~ProgressBar() { done(); }

  void update(uint64_t done, uint64_t total) {
    if (!enabled_ || total == 0) return;
    const auto now = std::chrono::steady_clock::now();
    if (done < total && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const int width = 30;
    const double f = static_cast<double>(done) / static_cast<double>(total);
    const int fill = static_cast<int>(f * width);
    std::fprintf(stderr, "\r%s [%s%s] %5.1f%%  %.2f / %.2f GiB", label_.c_str(), std::string(static_cast<size_t>(fill), '#').c_str(),
                 std::string(static_cast<size_t>(width - fill), '.').c_str(), 100.0 * f, static_cast<double>(done) / (1 << 30),
                 static_cast<double>(total) / (1 << 30));
    std::fflush(stderr);
    drawn_ = true;
  }
  void done() {
    if (drawn_) std::fprintf(stderr, "\n");
    drawn_ = false;
  }

 private:
  std::string label_;
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace fp4moe::cli
