#include "codec/zstd_frame.h"
