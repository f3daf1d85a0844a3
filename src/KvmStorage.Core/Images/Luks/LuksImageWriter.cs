using KvmStorage.Core.Images.Raw;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Luks;

/// <summary>
/// Creates LUKS files as <c>qemu-img create -f luks</c> does: the header and slot 0's key material, then the payload,
/// sparse (it reads as noise until written, as in qemu) unless preallocated.
/// </summary>
internal sealed class LuksImageWriter : IImageFormatWriter
{
    public ImageFormat Format => ImageFormat.Luks;

    public void Create(SafeFileHandle handle, string path, ImageCreateOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ImageEncryption encryption = options.Encryption
            ?? throw ImageErrors.Argument(LuksErrorIds.PassphraseRequired, "A LUKS image needs a passphrase.", path);
        if (options.BackingFile is not null)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, "An encrypted raw image (a LUKS file) cannot have a backing file; use qcow2.", path);
        }

        if (options.Preallocation == Preallocation.Metadata)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, "Metadata preallocation is only for qcow2.", path);
        }

        ulong size = options.VirtualSize ?? throw ImageErrors.Argument(ImageErrorIds.InvalidImageSize, "The virtual size is missing.", path);
        (LuksHeader header, byte[] area, XtsAes cipher) = LuksKeys.Create(encryption.Luks, encryption.Passphrase, path);
        cipher.Dispose();
        ulong payload = (ulong)header.PayloadSector * 512;
        RawImageWriter.Allocate(handle, payload, payload + size, options.Preallocation, path, progress, cancellationToken);
        ImageIo.Write(handle, area, 0);
    }
}

/// <summary>
/// A LUKS file as a conversion output (<c>qemu-img convert -O luks</c>): every payload sector is written, zeros
/// included, since a hole would read back as noise through the cipher. Workers encrypt (the tweak is the guest
/// sector, known before writing); the writer only writes.
/// </summary>
internal sealed class LuksConvertTarget : Convert.ConvertTarget
{
    private const int Block = 65536;

    private readonly SafeFileHandle handle;
    private readonly string path;
    private readonly ulong size;
    private readonly ImageEncryption encryption;
    private XtsAes? cipher;
    private ulong payload;

    public LuksConvertTarget(SafeFileHandle handle, string path, ulong size, ImageEncryption encryption)
    {
        this.handle = handle;
        this.path = path;
        this.size = (size + 511) & ~511UL;
        this.encryption = encryption;
    }

    public override int Unit => Block;

    public override bool WritesEverything => true;

    public override void Begin(CancellationToken cancellationToken)
    {
        (LuksHeader header, byte[] area, cipher) = LuksKeys.Create(encryption.Luks, encryption.Passphrase, path);
        payload = (ulong)header.PayloadSector * 512;
        ImageIo.Write(handle, area, 0);
        RandomAccess.SetLength(handle, (long)(payload + size));
    }

    public override void Prepare(Convert.ConvertChunk chunk)
    {
        XtsAes c = cipher ?? throw new InvalidOperationException("Begin was not called.");
        Array.Fill(chunk.States, Convert.UnitState.Data);
        c.Encrypt(chunk.Data.AsSpan(0, Sectors(chunk)), chunk.Offset / 512);
    }

    public override void Write(Convert.ConvertChunk chunk) =>
        ImageIo.Write(handle, chunk.Data.AsSpan(0, Sectors(chunk)), payload + chunk.Offset);

    public override void Complete(CancellationToken cancellationToken)
    {
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            cipher?.Dispose();
        }

        base.Dispose(disposing);
    }

    // The chunk's bytes up to the (sector-rounded) end of the disk; the buffer is zero-padded past the source's end.
    private int Sectors(Convert.ConvertChunk chunk) => (int)(Math.Min(chunk.Offset + ((ulong)chunk.UnitCount * Block), size) - chunk.Offset);
}
