#import <Foundation/Foundation.h>

NS_ASSUME_NONNULL_BEGIN

/// The PyTorch lite interpreter (LibTorch-Lite) behind an Objective-C interface Swift can call.
@interface LiteModule : NSObject
- (nullable instancetype)initWithPath:(NSString *)path error:(NSError **)error;
/// Runs forward on an NCHW float32 input; returns the float32 output and writes its shape.
- (nullable NSData *)forward:(const float *)input
                       shape:(NSArray<NSNumber *> *)shape
                 outputShape:(NSMutableArray<NSNumber *> *)outputShape
                       error:(NSError **)error;
@end

NS_ASSUME_NONNULL_END
