#include "codec/delta_format.h"
