#include "config.h"
#include "msg.h"
