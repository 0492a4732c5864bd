// Boost.JSON in header-only mode: its implementation is compiled once, here. Modules that parse JSON
// include <boost/json.hpp> in their .cc files only, so Boost stays out of every public header.
#include <boost/json/src.hpp>
