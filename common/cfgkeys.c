#include "config.h"
#include "cfgkeys.h"
