#pragma once
// Command-line plumbing shared by every executable (Boost.ProgramOptions):
// parsing with --help and --config FILE.json, subcommands, and the mapping
// of errors to exit statuses (0 success, 2 bad usage or input, 1 otherwise).

#include <boost/program_options.hpp>


#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "cellstate/tasks/options.h"

namespace cellstate {

/// po::value(variable) with the variable's current value as the default; a
/// floating-point default is shown as written ("0.1", not 0.10000000000000001).
template <class T>
boost::program_options::typed_value<T>* defaulted(T* variable) {
  if constexpr (std::is_floating_point_v<T>) {
    char text[32];
    std::snprintf(text, sizeof text, "%.6g", static_cast<double>(*variable));
    return boost::program_options::value(variable)->default_value(*variable, text);
  } else {
    return boost::program_options::value(variable)->default_value(*variable);
  }
}

/// An old spelling kept working for one release: `--old[=V]` is read as
/// `--new[=V]` (and a --config key "old" as "new") with a warning on stderr
/// naming the new spelling; `also` are further arguments it stands for
/// (e.g. --sample-topk K means --sample --top-k K).
struct Renamed {
  std::string old_name;
  std::string new_name;
  std::vector<std::string> also = {};
};

/// What a command takes beyond its named options.
struct CommandSpec {
  /// Positional FILES (a hidden option "files"; none or "-": standard input).
  std::vector<std::string>* files = nullptr;
  /// Deprecated spellings of this command's options.
  std::vector<Renamed> renamed = {};
  /// When option `inherit_option` is given, `inherit(its value)` supplies
  /// further option values (see InheritedOptions in tasks/options.h).
  std::string inherit_option = {};
  std::function<InheritedOptions(const std::string&)> inherit = {};
};

/// Parses argv into the variables bound in `options` (which should offer
/// --help; if it offers --config, that JSON file's keys are read as further
/// options, command-line values winning), then runs `validate`, which throws
/// std::exception on a bad value. Old spellings (spec.renamed, and a boolean
/// written --x=true / --x=false where --no-x exists) are rewritten with a
/// warning; --x together with --no-x is an error. Returns an exit status when
/// the program should stop now: 0 after printing --help, 2 after printing
/// "PROGRAM: message (see --help)" for bad usage; std::nullopt when it should
/// go on.
std::optional<int> parse_command_line(int argc, char** argv,
                                      const boost::program_options::options_description& options,
                                      const std::string& program, const std::function<void()>& validate = {},
                                      const CommandSpec& spec = {});

/// A boolean option spelled `--NAME` (on) and `--no-NAME` (off), bound to
/// `variable`, whose current value is the default --help shows. `name` may
/// carry a short form ("quiet,q", for --NAME only).
void add_flag(boost::program_options::options_description& options, const std::string& name, bool* variable,
              const std::string& help);

/// Adds --help and --config FILE (bound to `config`), which every command offers.
void add_help_and_config(boost::program_options::options_description& options, std::string& config);

/// Turns a JSON object of option values into "--key=value" arguments for
/// `options` (a boolean: --key or --no-key; arrays repeat the option).
/// Unknown keys are an error naming `file`; `renamed` keys are read under
/// their new names.
std::vector<std::string> config_to_arguments(const std::string& json_text, const std::string& file,
                                             const boost::program_options::options_description& options,
                                             const std::vector<Renamed>& renamed = {});

/// Runs `body` and maps what escapes it to an exit status, printing one line
/// "PROGRAM: message" on stderr: InputError and std::invalid_argument -> 2,
/// Interrupted (SIGINT, SIGTERM) -> 128 + signal, anything else -> 1.
int run_guarded(const std::string& program, const std::function<int()>& body);

struct Subcommand {
  std::string name;
  std::string summary;
  std::function<int(int argc, char** argv)> run;  // argv[0] is the subcommand
};

/// `PROGRAM SUBCOMMAND [options]`: dispatches to the subcommand, or lists
/// them for --help / no arguments (exit 0 / 2).
int run_subcommands(int argc, char** argv, const std::string& program,
                    const std::string& description, const std::vector<Subcommand>& subcommands);

}  // namespace cellstate
