#import "LiteModule.h"
