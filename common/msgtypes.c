#include "config.h"
#include "msgtypes.h"
