// Stands in for CUDA's runtime header in the emulated build: the kernels' own includes
// (`#include <cuda_runtime.h>`) get the emulation instead.
#pragma once

#include "emu_runtime.h"
