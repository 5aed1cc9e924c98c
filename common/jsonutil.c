#include "config.h"
#include "jsonutil.h"
