#include "cellstate/tasks/predict.h"

#include <ostream>

#include "cellstate/util/io.h"

namespace cellstate {

int for_each_input(const std::vector<std::string>& inputs, const std::string& error_prefix, std::ostream& err,
                   const std::function<void(const std::string& path)>& read) {
  int status = 0;
  for (const auto& path : inputs) {
    try {
      read(path);
    } catch (const InputError& e) {
      err << (error_prefix.empty() ? "" : error_prefix + ": ") << e.what() << "\n";
      status = 2;
    }
  }
  return status;
}

void stream_lines(const std::string& path, size_t batch_lines,
                  const std::function<void(const std::vector<NumberedLine>& batch)>& process,
                  CountProgress* progress, std::ostream* warnings, const std::string& error_prefix) {
  LineReader reader(path, kMaxInputLineBytes, LineReader::LongLines::kTruncate);
  const size_t limit = std::max<size_t>(1, batch_lines);
  std::vector<NumberedLine> pending;
  auto flush = [&] {
    if (pending.empty()) return;
    process(pending);
    if (progress) progress->add(static_cast<int64_t>(pending.size()));
    pending.clear();
  };
  std::string line;
  try {
    while (reader.next(line)) {
      if (reader.truncated_from() > 0 && warnings)
        *warnings << (error_prefix.empty() ? "" : error_prefix + ": ") << "warning: " << reader.path() << ":"
                  << reader.line_number() << ": a line of " << reader.truncated_from() << " bytes, cut to its first "
                  << line.size() << " (input lines are capped at " << kMaxInputLineBytes << " bytes)\n";
      pending.push_back({reader.line_number(), line});
      // A full batch, or nothing more there yet: answer what was read.
      if (pending.size() >= limit || !reader.ready()) flush();
    }
  } catch (const InputError&) {
    flush();  // the lines before the bad one still get their results
    throw;
  }
  flush();
}

}  // namespace cellstate
