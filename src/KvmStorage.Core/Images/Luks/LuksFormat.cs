using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Convert;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Luks;

/// <summary>The LUKS driver (qemu's block/crypto.c): a LUKS1 header, key slots, then the encrypted payload.</summary>
internal sealed class LuksFormat : IImageFormat
{
    public IImageFormatReader Reader { get; } = new LuksReader();

    public IImageFormatWriter? Writer { get; } = new LuksImageWriter();

    public ConvertOutput? ConvertOutput { get; } = new Output();

    public ImageLayer OpenLayer(HostFile file, ImageInfo info) => OpenLayer(file, info, null);

    public ImageLayer OpenLayer(HostFile file, ImageInfo info, ImagePassphrase? passphrase)
    {
        (XtsAes cipher, LuksHeader header) = LuksRegion.Unlock(file, 0, file.Length, checkPayload: true, passphrase);
        ulong payload = (ulong)header.PayloadSector * 512;
        return new LuksLayer(file, Math.Min(info.VirtualSize, file.Length - payload), payload, cipher);
    }

    /// <summary>A LUKS file written whole: header area plus every payload sector.</summary>
    private sealed class Output : ConvertOutput
    {
        public override string Name => "LUKS image";

        public override bool TakesEncryption => true;

        public override bool TakesPreallocation => false;

        public override int Unit(ConvertOptions options) => 65536;

        public override void Validate(ulong size, string path, ConvertOptions options)
        {
            if (options.Encryption is null)
            {
                throw Invalid(path, "A LUKS output needs -Encrypt and a passphrase.");
            }
        }

        public override ulong EstimateSize(ulong size, ulong data, ConvertOptions options) =>
            (LuksHeader.LayoutSector((uint)options.Encryption!.Luks.KeyBytes, LuksHeader.SlotCount) * 512UL) + size;

        public override ConvertTarget CreateTarget(SafeFileHandle handle, string tempPath, string finalPath, ulong size, ConvertOptions options) =>
            new LuksConvertTarget(handle, tempPath, size, options.Encryption!);
    }
}
