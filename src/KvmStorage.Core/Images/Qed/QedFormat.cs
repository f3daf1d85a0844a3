namespace KvmStorage.Core.Images.Qed;

/// <summary>The QED driver: recognised and inspected only (no block reader, check, create or conversion).</summary>
internal sealed class QedFormat : IImageFormat
{
    public IImageFormatReader Reader { get; } = new QedReader();
}
