#include "cellstate/cli/cli.h"

#include "cellstate/cli/vocabulary.h"
#include "cellstate/util/interrupt.h"
#include "cellstate/util/io.h"
#include "cellstate/util/runtime.h"

#include <torch/version.h>

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <iostream>
#include <cstdio>
#include <sstream>

namespace cellstate {

namespace po = boost::program_options;

namespace {

const Renamed* find_renamed(const std::vector<Renamed>& renamed, const std::string& name) {
  for (const auto& r : renamed)
    if (r.old_name == name) return &r;
  return nullptr;
}

bool has_option(const po::options_description& options, const std::string& name) {
  return options.find_nothrow(name, false) != nullptr;
}

/// Reads a boolean written as a value (--x=false, "x": "no" in a config).
std::optional<bool> parse_bool(const std::string& text) {
  if (text == "true" || text == "1" || text == "yes" || text == "on") return true;
  if (text == "false" || text == "0" || text == "no" || text == "off") return false;
  return std::nullopt;
}

/// Rewrites the old spellings in `args` into today's, adding one warning per
/// old spelling met to `warnings`.
std::vector<std::string> modernise(const std::vector<std::string>& args, const po::options_description& options,
                                   const std::vector<Renamed>& renamed, std::vector<std::string>& warnings) {
  std::vector<std::string> out;
  auto warn = [&](const std::string& message) {
    if (std::find(warnings.begin(), warnings.end(), message) == warnings.end()) warnings.push_back(message);
  };
  bool options_ended = false;
  std::vector<std::string> also;  // what renamed options stand for besides their new name, added after the options
  for (const auto& arg : args) {
    if (!options_ended && arg == "--") {
      out.insert(out.end(), also.begin(), also.end());
      also.clear();
      options_ended = true;
    }
    if (options_ended || arg.size() < 3 || arg.compare(0, 2, "--") != 0) {
      out.push_back(arg);
      continue;
    }
    const size_t eq = arg.find('=');
    std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    const std::optional<std::string> value =
        eq == std::string::npos ? std::nullopt : std::optional<std::string>(arg.substr(eq + 1));
    if (const Renamed* r = find_renamed(renamed, name)) {
      std::string now = "--" + r->new_name;
      for (const auto& a : r->also) now += " " + a;
      warn("--" + name + " is deprecated: write " + now + " (the old spelling goes in the next release)");
      name = r->new_name;
      also.insert(also.end(), r->also.begin(), r->also.end());
    }
    if (value && has_option(options, "no-" + name)) {
      const auto on = parse_bool(*value);
      if (!on) throw std::invalid_argument("--" + name + " takes no value (write --" + name + " or --no-" + name + ")");
      warn("--" + name + "=" + *value + " is deprecated: write --" + (*on ? "" : "no-") + name);
      out.push_back("--" + std::string(*on ? "" : "no-") + name);
    } else {
      out.push_back("--" + name + (value ? "=" + *value : std::string()));
    }
  }
  out.insert(out.end(), also.begin(), also.end());
  return out;
}

/// --x together with --no-x is a contradiction, not "the last one wins".
void check_flag_pairs(const po::options_description& options, const po::variables_map& vm) {
  auto given = [&](const std::string& name) {
    const auto it = vm.find(name);
    return it != vm.end() && !it->second.defaulted() && it->second.value().type() == typeid(bool) &&
           it->second.as<bool>();
  };
  for (const auto& option : options.options()) {
    const std::string& name = option->long_name();
    if (name.compare(0, 3, "no-") == 0 && given(name) && given(name.substr(3)))
      throw std::invalid_argument("--" + name.substr(3) + " and --" + name + " contradict each other");
  }
}

}  // namespace

std::vector<std::string> config_to_arguments(const std::string& json_text, const std::string& file,
                                             const po::options_description& options,
                                             const std::vector<Renamed>& renamed) {
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for a number like 9e999
    throw InputError(file, 0, std::string("not valid JSON (") + e.what() + ")");
  }
  if (!config.is_object()) throw InputError(file, 0, "expected a JSON object of option values");
  std::vector<std::string> args;
  for (const auto& [key, value] : config.items()) {
    if (key == "config") continue;
    const Renamed* r = find_renamed(renamed, key);
    const std::string name = r != nullptr ? r->new_name : key;
    const auto* option = options.find_nothrow(name, false);
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
      // The old name is kept so that parse_command_line warns about it.
      if (value.get<bool>()) args.push_back("--" + key);
      else if (has_option(options, "no-" + name)) args.push_back("--no-" + name);
    } else if (value.is_array()) {
      for (const auto& v : value) args.push_back("--" + key + "=" + scalar(v));
    } else {
      args.push_back("--" + key + "=" + scalar(value));
    }
  }
  return args;
}

namespace {

/// The value of a numeric option as a double (nullopt for other types).
std::optional<double> numeric_value(const boost::any& v) {
  if (const auto* p = boost::any_cast<int>(&v)) return *p;
  if (const auto* p = boost::any_cast<long>(&v)) return static_cast<double>(*p);
  if (const auto* p = boost::any_cast<long long>(&v)) return static_cast<double>(*p);
  if (const auto* p = boost::any_cast<unsigned>(&v)) return *p;
  if (const auto* p = boost::any_cast<unsigned long>(&v)) return static_cast<double>(*p);
  if (const auto* p = boost::any_cast<unsigned long long>(&v)) return static_cast<double>(*p);
  if (const auto* p = boost::any_cast<double>(&v)) return *p;
  if (const auto* p = boost::any_cast<float>(&v)) return *p;
  return std::nullopt;
}

/// Every numeric option's value (given or default) within the vocabulary's
/// range for it; NaN and infinities refused.
void check_ranges(const po::variables_map& vm) {
  for (const auto& [name, value] : vm) {
    const VocabularyEntry* entry = find_in_vocabulary(name);
    if (entry == nullptr || !entry->range) continue;
    const auto v = numeric_value(value.value());
    if (!v || entry->range->contains(*v)) continue;
    char got[32];
    std::snprintf(got, sizeof got, "%.15g", *v);
    throw std::invalid_argument("--" + name + " must be in " + entry->range->to_string() + ", got " + got);
  }
}

/// An option's value as text, for comparing and for messages.
std::string value_text(const boost::any& v) {
  if (const auto* p = boost::any_cast<std::string>(&v)) return *p;
  if (const auto* p = boost::any_cast<bool>(&v)) return *p ? "true" : "false";
  if (const auto d = numeric_value(v)) {
    char text[32];
    std::snprintf(text, sizeof text, "%.15g", *d);
    return text;
  }
  return "?";
}

/// Adds `inherited`'s values to `vm` where nothing was given; a fixed value
/// given differently is an error naming the option, both values and the source.
void store_inherited(const po::options_description& options, po::variables_map& vm,
                     const InheritedOptions& inherited, const std::vector<Renamed>& renamed) {
  auto given = [&](const std::string& name) {
    const auto it = vm.find(name);
    return it != vm.end() && !it->second.defaulted();
  };
  auto switched_on = [&](const std::string& name) {
    const auto it = vm.find(name);
    return given(name) && it->second.value().type() == typeid(bool) && it->second.as<bool>();
  };
  auto arguments = [&](const std::string& key, const nlohmann::json& value) {
    return config_to_arguments(nlohmann::json{{key, value}}.dump(), inherited.source, options, renamed);
  };
  std::vector<std::string> args;
  for (const auto& [key, value] : inherited.fixed.items()) {
    if (value.is_boolean()) {
      const bool on = value.get<bool>();
      if ((on && switched_on("no-" + key)) || (!on && switched_on(key)))
        throw std::invalid_argument("--" + std::string(on ? "no-" : "") + key + " does not fit " + inherited.source +
                                    ", which has --" + (on ? "" : "no-") + key + " (leave it out to keep that)");
      if (!switched_on(key) && !switched_on("no-" + key)) {
        const auto a = arguments(key, value);
        args.insert(args.end(), a.begin(), a.end());
      }
      continue;
    }
    const auto a = arguments(key, value);
    if (!given(key)) {
      args.insert(args.end(), a.begin(), a.end());
      continue;
    }
    po::variables_map wanted;
    po::store(po::command_line_parser(a).options(options).run(), wanted);
    const std::string want = value_text(wanted[key].value()), got = value_text(vm[key].value());
    if (want != got)
      throw std::invalid_argument("--" + key + " " + got + " does not fit " + inherited.source + ", whose --" + key +
                                  " is " + want + " (leave --" + key + " out to keep it)");
  }
  for (const auto& [key, value] : inherited.defaults.items()) {
    if (given(key) || given("no-" + key) || inherited.fixed.contains(key)) continue;
    const auto a = arguments(key, value);
    args.insert(args.end(), a.begin(), a.end());
  }
  // store() keeps values already given: only the defaulted ones take these.
  po::store(po::command_line_parser(args).options(options).run(), vm);
}

}  // namespace

std::optional<int> parse_command_line(int argc, char** argv, const po::options_description& options,
                                      const std::string& program, const std::function<void()>& validate,
                                      const CommandSpec& spec) {
  po::options_description all;
  all.add(options);
  po::positional_options_description positional;
  if (spec.files != nullptr) {
    all.add_options()("files", po::value(spec.files)->multitoken()->composing(), "input files");
    positional.add("files", -1);
  }
  std::vector<std::string> warnings;
  try {
    const auto args = modernise(std::vector<std::string>(argv + std::min(argc, 1), argv + argc), all,
                                spec.renamed, warnings);
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(all).positional(positional).run(), vm);
    if (vm.count("help")) {
      std::cout << options << "\n";
      return 0;
    }
    if (vm.count("config") && has_option(options, "config")) {
      const auto file = vm["config"].as<std::string>();
      auto config_args = modernise(config_to_arguments(read_file(file), file, all, spec.renamed), all,
                                   spec.renamed, warnings);
      // A flag given on the command line wins over its opposite in the file.
      auto given = [&](const std::string& name) {
        const auto it = vm.find(name);
        return it != vm.end() && !it->second.defaulted();
      };
      config_args.erase(std::remove_if(config_args.begin(), config_args.end(),
                                       [&](const std::string& arg) {
                                         if (arg.compare(0, 5, "--no-") == 0) return given(arg.substr(5));
                                         return arg.compare(0, 2, "--") == 0 && arg.find('=') == std::string::npos &&
                                                given("no-" + arg.substr(2));
                                       }),
                        config_args.end());
      // store() keeps values already stored: the command line wins.
      po::store(po::command_line_parser(config_args).options(all).run(), vm);
    }
    if (spec.inherit && !spec.inherit_option.empty()) {
      const auto it = vm.find(spec.inherit_option);
      if (it != vm.end() && !it->second.defaulted())
        store_inherited(all, vm, spec.inherit(it->second.as<std::string>()), spec.renamed);
    }
    check_flag_pairs(all, vm);
    check_ranges(vm);
    for (const auto& w : warnings) std::cerr << program << ": warning: " << w << "\n";
    warnings.clear();
    po::notify(vm);
    if (validate) validate();
  } catch (const InputError& e) {
    for (const auto& w : warnings) std::cerr << program << ": warning: " << w << "\n";
    std::cerr << program << ": " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    for (const auto& w : warnings) std::cerr << program << ": warning: " << w << "\n";
    std::cerr << program << ": " << e.what() << " (see --help)\n";
    return 2;
  }
  return std::nullopt;
}

void add_flag(po::options_description& options, const std::string& name, bool* variable, const std::string& help) {
  const std::string long_name = name.substr(0, name.find(','));
  options.add_options()(name.c_str(),
                        po::bool_switch()->notifier([variable](bool given) {
                          if (given) *variable = true;
                        }),
                        (help + (*variable ? " [on]" : " [off]")).c_str())(
      ("no-" + long_name).c_str(), po::bool_switch()->notifier([variable](bool given) {
        if (given) *variable = false;
      }),
      ("turn --" + long_name + " off").c_str());
}

int run_guarded(const std::string& program, const std::function<int()>& body) {
  try {
    return body();
  } catch (const Interrupted& e) {
    std::cerr << program << ": " << e.what() << "\n";
    return e.exit_status();
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
