#include "config.h"
#include "jwt.h"
