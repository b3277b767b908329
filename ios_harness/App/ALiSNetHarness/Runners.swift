import ALiSNetCore
import CoreML
import ExecuTorch
import Foundation

struct RunnerError: Error, CustomStringConvertible { let description: String }

/// .ptl through LibTorch-Lite (Objective-C++ bridge in LiteModule.mm).
final class LiteRunner: ArtifactRunner {
    private let module: LiteModule
    init(url: URL) throws { module = try LiteModule(path: url.path) }

    func run(_ input: [Float], shape: [Int]) throws -> (logits: [Float], shape: [Int]) {
        let outShape = NSMutableArray()
        let data = try input.withUnsafeBufferPointer { try module.forward($0.baseAddress!, shape: shape.map { NSNumber(value: $0) }, outputShape: outShape) }
        let logits = data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        return (logits, outShape.map { ($0 as! NSNumber).intValue })
    }
}

/// .pte through the ExecuTorch Swift API (XNNPACK and Core ML delegates linked, see project.yml).
final class ExecuTorchRunner: ArtifactRunner {
    private let module: Module
    init(url: URL) throws {
        module = Module(filePath: url.path)
        try module.load("forward")
    }

    func run(_ input: [Float], shape: [Int]) throws -> (logits: [Float], shape: [Int]) {
        let x = Tensor<Float>(input, shape: shape)
        let y = try Tensor<Float>(module.forward(x))
        return (y.scalars(), y.shape)
    }
}

/// .mlpackage through Core ML: compiled on first use; input/output names from the manifest.
final class CoreMLRunner: ArtifactRunner {
    private let model: MLModel
    private let inputName: String, outputName: String
    init(url: URL, inputName: String, outputName: String) throws {
        let config = MLModelConfiguration()
        config.computeUnits = .all
        model = try MLModel(contentsOf: try MLModel.compileModel(at: url), configuration: config)
        self.inputName = inputName
        self.outputName = outputName
    }

    func run(_ input: [Float], shape: [Int]) throws -> (logits: [Float], shape: [Int]) {
        let x = try MLMultiArray(shape: shape.map { NSNumber(value: $0) }, dataType: .float32)
        x.withUnsafeMutableBufferPointer(ofType: Float.self) { ptr, _ in _ = ptr.initialize(from: input) }
        let out = try model.prediction(from: MLDictionaryFeatureProvider(dictionary: [inputName: MLFeatureValue(multiArray: x)]))
        guard let y = out.featureValue(for: outputName)?.multiArrayValue else {
            throw RunnerError(description: "Core ML model has no multi-array output \"\(outputName)\"")
        }
        let outShape = y.shape.map { $0.intValue }
        var logits = [Float](repeating: 0, count: y.count)
        if y.dataType == .float32 {
            y.withUnsafeBufferPointer(ofType: Float.self) { src in
                // honour strides: copy element by element in row-major order
                let strides = y.strides.map { $0.intValue }
                var index = [Int](repeating: 0, count: outShape.count)
                for i in 0..<y.count {
                    logits[i] = src[zip(index, strides).reduce(0) { $0 + $1.0 * $1.1 }]
                    var d = outShape.count - 1
                    while d >= 0 { index[d] += 1; if index[d] < outShape[d] { break }; index[d] = 0; d -= 1 }
                }
            }
        } else {
            for i in 0..<y.count { logits[i] = y[i].floatValue }  // fp16 outputs: NSNumber path, row-major for contiguous arrays
        }
        return (logits, outShape)
    }
}

enum Runtimes {
    static func open(_ entry: ArtifactEntry, bundle: ALiSNetBundle) throws -> ArtifactRunner {
        let url = bundle.artifactURL(entry)
        switch entry.format {
        case "ptl": return try LiteRunner(url: url)
        case "pte": return try ExecuTorchRunner(url: url)
        case "coreml": return try CoreMLRunner(url: url, inputName: bundle.manifest.input.name, outputName: bundle.manifest.output.name)
        default: throw RunnerError(description: "\(entry.format) artifacts are not run by this app (ONNX: use onnxruntime-objc)")
        }
    }
}
