using KvmStorage.Core.Images.Block;

namespace KvmStorage.Core.Images.Luks;

/// <summary>The LUKS driver: recognised and inspected; its payload is encrypted, so it is never read.</summary>
internal sealed class LuksFormat : IImageFormat
{
    public IImageFormatReader Reader { get; } = new LuksReader();

    public ImageLayer OpenLayer(HostFile file, ImageInfo info) =>
        throw BlockErrors.NotSupported(BlockErrorIds.ImageEncrypted, info.Path, "the image is LUKS-encrypted; encrypted images cannot be read.");
}
