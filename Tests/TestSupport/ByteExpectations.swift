import Testing

/// `#expect(actual == expected)` for large byte arrays: on a mismatch it reports the sizes and the
/// first differing offset. Swift Testing would otherwise compute a full collection difference,
/// which takes minutes for a few MiB (hours under a sanitizer).
public func expectSameBytes(_ actual: [UInt8], _ expected: [UInt8], _ comment: @autoclosure () -> String = "",
                            sourceLocation: SourceLocation = #_sourceLocation) {
    guard actual != expected else { return }
    let firstDifference = zip(actual, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        ?? min(actual.count, expected.count)
    Issue.record("\(comment()) got \(actual.count) bytes, expected \(expected.count); first difference at offset \(firstDifference)",
                 sourceLocation: sourceLocation)
}
