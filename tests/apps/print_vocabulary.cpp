// Prints the command line's shared vocabulary (cli/vocabulary.h), one option
// per line: NAME<TAB>flag|value<TAB>MEANING<TAB>RANGE ("-" when it has none).
// Read by cli_vocabulary.sh.
#include <iostream>

#include "cellstate/cli/vocabulary.h"

int main() {
  for (const auto& e : cellstate::option_vocabulary())
    std::cout << e.name << '\t' << (e.flag ? "flag" : "value") << '\t' << e.meaning << '\t'
              << (e.range ? e.range->to_string() : "-") << '\n';
  return 0;
}
