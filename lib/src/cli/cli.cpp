#include "cellstate/cli/cli.h"

#include "cellstate/util/io.h"
#include "cellstate/util/runtime.h"

#include <torch/version.h>

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <iostream>
#include <sstream>

namespace cellstate {

namespace po = boost::program_options;

std::vector<std::string> config_to_arguments(const std::string& json_text, const std::string& file,
                                             const po::options_description& options) {
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::parse_error& e) {
    throw InputError(file, 0, std::string("not valid JSON (") + e.what() + ")");
  }
  if (!config.is_object()) throw InputError(file, 0, "expected a JSON object of option values");
  std::vector<std::string> args;
  for (const auto& [key, value] : config.items()) {
    if (key == "config") continue;
    const auto* option = options.find_nothrow(key, false);
    if (option == nullptr) throw InputError(file, 0, "unknown option \"" + key + "\"");
    const bool is_switch = option->semantic()->max_tokens() == 0;
    auto scalar = [&](const nlohmann::json& v) -> std::string {
      if (v.is_string()) return v.get<std::string>();
      if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
      if (v.is_number()) return v.dump();
      throw InputError(file, 0, "option \"" + key + "\" must be a string, number or boolean");
    };
    if (is_switch) {
      if (!value.is_boolean()) throw InputError(file, 0, "option \"" + key + "\" must be true or false");
      if (value.get<bool>()) args.push_back("--" + key);
    } else if (value.is_array()) {
      for (const auto& v : value) args.push_back("--" + key + "=" + scalar(v));
    } else {
      args.push_back("--" + key + "=" + scalar(value));
    }
  }
  return args;
}

std::optional<int> parse_command_line(int argc, char** argv, const po::options_description& options,
                                      const std::string& program,
                                      const std::function<void()>& validate,
                                      const po::positional_options_description* positional) {
  try {
    po::variables_map vm;
    po::command_line_parser parser(argc, argv);
    parser.options(options);
    if (positional != nullptr) parser.positional(*positional);
    po::store(parser.run(), vm);
    if (vm.count("help")) {
      std::cout << options << "\n";
      return 0;
    }
    if (vm.count("config") && options.find_nothrow("config", false) != nullptr) {
      const auto file = vm["config"].as<std::string>();
      const auto args = config_to_arguments(read_file(file), file, options);
      // store() keeps values already stored: the command line wins.
      po::store(po::command_line_parser(args).options(options).run(), vm);
    }
    po::notify(vm);
    if (validate) validate();
  } catch (const InputError& e) {
    std::cerr << program << ": " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << program << ": " << e.what() << " (see --help)\n";
    return 2;
  }
  return std::nullopt;
}

int run_guarded(const std::string& program, const std::function<int()>& body) {
  try {
    return body();
  } catch (const InputError& e) {
    std::cerr << program << ": " << e.what() << "\n";
    return 2;
  } catch (const std::invalid_argument& e) {
    std::cerr << program << ": " << e.what() << "\n";
    return 2;
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    const size_t nl = msg.find('\n');
    std::cerr << program << ": error: " << msg.substr(0, nl) << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << program << ": error: " << e.what() << "\n";
    return 1;
  }
}

int run_subcommands(int argc, char** argv, const std::string& program,
                    const std::string& description, const std::vector<Subcommand>& subcommands) {
  auto usage = [&](std::ostream& out) {
    out << program << ": " << description << "\n\nUsage: " << program
        << " COMMAND [options]   (" << program << " COMMAND --help for its options; " << program
        << " --version)\n\nCommands:\n";
    for (const auto& s : subcommands) {
      std::string name = s.name;
      name.resize(std::max<size_t>(name.size(), 10), ' ');
      out << "  " << name << "  " << s.summary << "\n";
    }
  };
  if (argc < 2) {
    usage(std::cerr);
    return 2;
  }
  const std::string command = argv[1];
  if (command == "--help" || command == "-h" || command == "help") {
    usage(std::cout);
    return 0;
  }
  if (command == "--version" || command == "-V") {
    std::cout << program << " " << version() << " (cellstate; LibTorch " << TORCH_VERSION << ")\n";
    return 0;
  }
  for (const auto& s : subcommands)
    if (s.name == command) return run_guarded(program + " " + command, [&] { return s.run(argc - 1, argv + 1); });
  std::cerr << program << ": unknown command '" << command << "' (see " << program << " --help)\n";
  return 2;
}

void add_help_and_config(boost::program_options::options_description& options, std::string& config) {
  options.add_options()("help,h", "show this help")(
      "config", boost::program_options::value(&config), "read options from a JSON file (command line wins)");
}

}  // namespace cellstate
