#include "cellstate/cli.h"

#include <iostream>

namespace cellstate {

std::optional<int> parse_command_line(int argc, char** argv,
                                      const boost::program_options::options_description& options,
                                      const std::string& program,
                                      const std::function<void()>& validate) {
  namespace po = boost::program_options;
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, options), vm);
    if (vm.count("help")) {
      std::cout << options << "\n";
      return 0;
    }
    po::notify(vm);
    if (validate) validate();
  } catch (const std::exception& e) {
    std::cerr << program << ": " << e.what() << " (see --help)\n";
    return 2;
  }
  return std::nullopt;
}

}  // namespace cellstate
