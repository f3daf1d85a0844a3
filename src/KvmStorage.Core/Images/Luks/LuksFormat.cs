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

    /// <summary>
    /// qemu-img has no check for LUKS files; the module checks what can be checked without the key: the header and
    /// its key slots (their layout inside the file, before the payload), the cipher it names. A damaged header is an error.
    /// </summary>
    public KvmStorage.Core.Images.Check.ImageCheckResult Check(SafeFileHandle handle, ImageProbe probe, KvmStorage.Core.Images.Check.ImageRepairMode repair, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        string path = Path.GetFullPath(probe.Path);
        if (repair != KvmStorage.Core.Images.Check.ImageRepairMode.None)
        {
            throw ImageErrors.NotSupported(KvmStorage.Core.Images.Check.ImageCheckErrorIds.CheckNotSupported, path, "a LUKS header cannot be repaired; restore it from a header backup.");
        }

        ulong length = (ulong)RandomAccess.GetLength(handle);
        byte[] head = ForeignImageFile.ReadExactly(handle, path, length, 0, LuksHeader.Length, "LUKS header");
        var corruptions = new List<KvmStorage.Core.Images.Check.ImageCorruption>();
        try
        {
            LuksHeader header = LuksHeader.Parse(head, length, checkPayload: true, path);
            LuksKeys.CheckCipher(header, path);
            if (!header.Slots.Any(s => s.Active))
            {
                corruptions.Add(new KvmStorage.Core.Images.Check.ImageCorruption(208, KvmStorage.Core.Images.Check.ImageCorruptionKind.CheckError, "no key slot is active: no passphrase can open the image."));
            }
        }
        catch (Errors.KvmStorageException e) when (e.ErrorId == ForeignFormatErrorIds.LuksHeaderInvalid)
        {
            corruptions.Add(new KvmStorage.Core.Images.Check.ImageCorruption(0, KvmStorage.Core.Images.Check.ImageCorruptionKind.CheckError, e.Message));
        }

        return new KvmStorage.Core.Images.Check.ImageCheckResult
        {
            Path = path,
            ImageFormat = ImageFormat.Luks,
            Corruptions = corruptions,
            CorruptionCount = (ulong)corruptions.Count,
        };
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
