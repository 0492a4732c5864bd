#include "codec/safetensors.h"
