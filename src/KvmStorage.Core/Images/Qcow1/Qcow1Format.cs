namespace KvmStorage.Core.Images.Qcow1;

/// <summary>The qcow (version 1) driver: recognised and inspected only (no block reader, check, create or conversion).</summary>
internal sealed class Qcow1Format : IImageFormat
{
    public IImageFormatReader Reader { get; } = new Qcow1Reader();
}
