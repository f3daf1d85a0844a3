using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images;

/// <summary>How much of a new or grown image is allocated up front (qemu's <c>preallocation</c>).</summary>
public enum Preallocation
{
    /// <summary>Sparse: nothing allocated.</summary>
    Off,

    /// <summary>qcow2 only: all L2 tables and data clusters mapped, the file extended sparsely.</summary>
    Metadata,

    /// <summary>Space reserved with posix_fallocate (qcow2: plus the metadata).</summary>
    Falloc,

    /// <summary>Zeros written over the whole data area (slow, fully allocated on every file system).</summary>
    Full,
}

/// <summary>Progress of a long image operation, in bytes.</summary>
public readonly record struct ImageProgress(ulong BytesCompleted, ulong BytesTotal)
{
    public double Percent => BytesTotal == 0 ? 100 : 100.0 * BytesCompleted / BytesTotal;
}

/// <summary>What <see cref="ImageCreator.Create"/> makes. Defaults match <c>qemu-img create</c>.</summary>
public sealed record ImageCreateOptions
{
    public ImageFormat Format { get; init; } = ImageFormat.Qcow2;

    /// <summary>Guest size in bytes, rounded up to 512 like qemu-img; null takes the backing file's size.</summary>
    public ulong? VirtualSize { get; init; }

    public Preallocation Preallocation { get; init; }

    /// <summary>
    /// qcow2 cluster size: a power of two from 512 to 2 MiB; default 64 KiB. vhdx block size: a power of two from
    /// 1 MiB to 256 MiB; default as qemu-img picks it from the size (8 MiB up to 1 GiB, 16 MiB, 32 MiB, 64 MiB).
    /// </summary>
    public uint? ClusterSize { get; init; }

    /// <summary>
    /// vhdx, vpc and vdi: a fixed image (every block allocated up front, as Hyper-V's and VirtualBox's fixed disks,
    /// qemu's <c>subformat=fixed</c> and <c>static=on</c>) rather than a dynamic one. The file is still sparse.
    /// </summary>
    public bool Fixed { get; init; }

    /// <summary>
    /// vpc: record the size itself rather than the nearest CHS geometry (qemu's <c>force_size</c>), rounded up to whole
    /// MiB as Azure requires of its fixed VHDs.
    /// </summary>
    public bool ForceSize { get; init; }

    /// <summary>qcow2 compatibility level: "1.1" (version 3, default) or "0.10" (version 2).</summary>
    public string Compat { get; init; } = "1.1";

    public bool LazyRefcounts { get; init; }

    /// <summary>qcow2 refcount width: a power of two from 1 to 64; version 2 only supports 16.</summary>
    public int RefcountBits { get; init; } = 16;

    /// <summary>The backing file name, recorded exactly as given (relative names are relative to the new image's folder).</summary>
    public string? BackingFile { get; init; }

    /// <summary>The backing file's format, always recorded; null detects it from the backing file.</summary>
    public ImageFormat? BackingFormat { get; init; }

    /// <summary>Permissions of the new file, exact regardless of the umask.</summary>
    public UnixFileMode Mode { get; init; } = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    /// <summary>Owner uid, or -1 to keep the caller's.</summary>
    public int Owner { get; init; } = -1;

    /// <summary>Group gid, or -1 to keep the caller's.</summary>
    public int Group { get; init; } = -1;

    /// <summary>How recorded backing names become files here and which may be read (see <see cref="BackingFileRule"/>); null is qemu's unrestricted rule.</summary>
    public BackingFileRule? BackingRule { get; init; }

    /// <summary>
    /// Encrypt the image with LUKS: qcow2 keeps a LUKS header in its clusters; <see cref="ImageFormat.Raw"/> becomes
    /// a LUKS file (<c>qemu-img create -f luks</c>), which libvirt calls a raw volume with LUKS encryption.
    /// </summary>
    public ImageEncryption? Encryption { get; init; }
}

/// <summary>Writes a new image of one format into a freshly created, empty file.</summary>
public interface IImageFormatWriter
{
    ImageFormat Format { get; }

    /// <summary>Whether the format has a fixed variant (<see cref="ImageCreateOptions.Fixed"/>).</summary>
    bool TakesFixed => false;

    /// <summary>Whether <see cref="ImageCreateOptions.ForceSize"/> applies (vpc).</summary>
    bool TakesForceSize => false;

    /// <summary>
    /// Writes the image. <see cref="ImageCreator"/> has validated the common options, resolved
    /// <see cref="ImageCreateOptions.VirtualSize"/> and <see cref="ImageCreateOptions.BackingFormat"/>, and deletes the file on failure.
    /// </summary>
    void Create(SafeFileHandle handle, string path, ImageCreateOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken);
}

/// <summary>How ImageResizer.Resize changes an image's size.</summary>
public sealed class ImageResizeOptions
{
    /// <summary>Shrinking must be asked for explicitly (<c>qemu-img resize --shrink</c>).</summary>
    public bool AllowShrink { get; init; }

    /// <summary>How the grown part is allocated.</summary>
    public Preallocation Preallocation { get; init; }
}
