namespace KvmStorage.Core.Images.Parallels;

/// <summary>The parallels driver: recognised and inspected only (no block reader, check, create or conversion).</summary>
internal sealed class ParallelsFormat : IImageFormat
{
    public IImageFormatReader Reader { get; } = new ParallelsReader();
}
