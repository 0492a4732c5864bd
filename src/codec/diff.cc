#include "codec/diff.h"
