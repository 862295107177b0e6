#pragma once
// Command-line plumbing shared by every executable (Boost.ProgramOptions).

#include <boost/program_options.hpp>

#include <functional>
#include <optional>
#include <string>

namespace cellstate {

/// Parses argv into the variables bound in `options` (which should offer
/// --help), then runs `validate`, which throws std::exception on a bad value.
/// Returns an exit status when the program should stop now: 0 after printing
/// --help, 2 after printing "PROGRAM: message (see --help)" for bad usage;
/// std::nullopt when it should go on.
std::optional<int> parse_command_line(int argc, char** argv,
                                      const boost::program_options::options_description& options,
                                      const std::string& program,
                                      const std::function<void()>& validate = {});

}  // namespace cellstate
