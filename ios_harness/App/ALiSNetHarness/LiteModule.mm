#import "LiteModule.h"

#include <LibTorch-Lite/LibTorch-Lite.h>

#include <vector>

static NSError *LiteError(const char *what) {
  return [NSError errorWithDomain:@"ALiSNetHarness.LibTorchLite" code:1
                         userInfo:@{NSLocalizedDescriptionKey : [NSString stringWithUTF8String:what]}];
}

@implementation LiteModule {
  std::unique_ptr<torch::jit::mobile::Module> _module;
}

- (nullable instancetype)initWithPath:(NSString *)path error:(NSError **)error {
  if (self = [super init]) {
    try {
      _module = std::make_unique<torch::jit::mobile::Module>(torch::jit::_load_for_mobile(path.UTF8String));
    } catch (const std::exception &e) {
      if (error) *error = LiteError(e.what());
      return nil;
    }
  }
  return self;
}

- (nullable NSData *)forward:(const float *)input
                       shape:(NSArray<NSNumber *> *)shape
                 outputShape:(NSMutableArray<NSNumber *> *)outputShape
                       error:(NSError **)error {
  try {
    std::vector<int64_t> dims;
    for (NSNumber *d in shape) dims.push_back(d.longLongValue);
    at::Tensor x = torch::from_blob((void *)input, dims, at::kFloat);
    c10::InferenceMode guard;
    at::Tensor y = _module->forward({x}).toTensor().contiguous();
    [outputShape removeAllObjects];
    for (int64_t d : y.sizes()) [outputShape addObject:@(d)];
    return [NSData dataWithBytes:y.data_ptr<float>() length:y.numel() * sizeof(float)];
  } catch (const std::exception &e) {
    if (error) *error = LiteError(e.what());
    return nil;
  }
}
@end
