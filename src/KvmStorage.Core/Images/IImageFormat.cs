using KvmStorage.Core.Errors;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Check;
using KvmStorage.Core.Images.Convert;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images;

/// <summary>
/// One image format's driver, as qemu's <c>BlockDriver</c> is: everything the engine can do with the format, reached
/// through <see cref="ImageFormatRegistry"/>. What a format lacks keeps the default here, which refuses with the
/// operation's typed NotSupported error (or null, for the writers).
/// </summary>
internal interface IImageFormat
{
    /// <summary>Detection and header details (<c>qemu-img info</c>).</summary>
    IImageFormatReader Reader { get; }

    ImageFormat Format => Reader.Format;

    /// <summary>Creates new images (<c>qemu-img create</c>); null when the format cannot be created.</summary>
    IImageFormatWriter? Writer => null;

    /// <summary>The format as an output of <see cref="ImageConverter"/> (<c>qemu-img convert -O</c>); null when it cannot be one.</summary>
    ConvertOutput? ConvertOutput => null;

    /// <summary>One layer of a block reader: the image's own mapping of guest offsets (its backing chain is the caller's).</summary>
    ImageLayer OpenLayer(HostFile file, ImageInfo info) =>
        throw BlockErrors.NotSupported(BlockErrorIds.FormatNotReadable, info.Path, $"{info.Format} images cannot be read by the block layer.");

    /// <summary>
    /// A layer of an image that may be encrypted: <paramref name="passphrase"/> unlocks it (formats that encrypt
    /// override this); an encrypted image of a format that cannot decrypt is refused.
    /// </summary>
    ImageLayer OpenLayer(HostFile file, ImageInfo info, ImagePassphrase? passphrase) =>
        info.Encryption is null
            ? OpenLayer(file, info)
            : throw BlockErrors.NotSupported(BlockErrorIds.ImageEncrypted, info.Path, $"the image is encrypted ({info.Encryption}); {Format.ToQemuName()} encryption cannot be read.");

    /// <summary>Checks an open image's metadata and, unless <paramref name="repair"/> is None, repairs it (<c>qemu-img check</c>).</summary>
    ImageCheckResult Check(SafeFileHandle handle, ImageProbe probe, ImageRepairMode repair, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        throw ImageErrors.NotSupported(ImageCheckErrorIds.CheckNotSupported, probe.Path, $"checking {Format.ToQemuName()} images is not supported.");

    /// <summary>Whether images of the format take guest writes in place (<see cref="OpenDataWriter"/>).</summary>
    bool WritesData => false;

    /// <summary>
    /// Opens an image for in-place writes of guest data, first grown, as qemu-img commit grows its base, when its
    /// guest size is below <paramref name="minimumSize"/>; the caller holds the image's write lock.
    /// </summary>
    IImageDataWriter OpenDataWriter(string path, ulong minimumSize, BlockOpenOptions backingOptions) =>
        throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedFormat, path, $"writing {Format.ToQemuName()} images in place is not supported.");

    /// <summary>Whether the format records a backing file that <see cref="SetBacking"/> can rewrite.</summary>
    bool SetsBacking => false;

    /// <summary>Rewrites the recorded backing file name and format of an image opened for writing (<c>qemu-img rebase -u</c>).</summary>
    void SetBacking(SafeFileHandle handle, string path, string? backingFile, string? backingFormat) =>
        throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedFormat, path, $"{Format.ToQemuName()} images record no backing file.");

    /// <summary>Changes the virtual size of an image opened for writing, under its write lock (<c>qemu-img resize</c>).</summary>
    void Resize(SafeFileHandle handle, string path, ulong newSize, ImageResizeOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedFormat, path, $"resizing {Format.ToQemuName()} images is not supported.");

    /// <summary>
    /// Gives back, in place, the space of data that reads as zeros; returns the clusters freed. <paramref name="compactNext"/>
    /// says a compact copy (<see cref="WriteCompactCopy"/>) follows, which may make the in-place pass pointless.
    /// </summary>
    ulong FreeZeros(SafeFileHandle handle, string path, bool compactNext, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedFormat, path, $"optimizing {Format.ToQemuName()} images is not supported.");

    /// <summary>Checks an amendment of the image's options (<c>qemu-img amend</c>) and says what it would change; writes nothing.</summary>
    ImageAmendPlan PlanAmend(SafeFileHandle handle, string path, ImageAmendOptions options) =>
        throw new KvmStorageException(ErrorKind.NotSupported, AmendErrorIds.AmendNotSupported, $"the options of {Format.ToQemuName()} images cannot be amended; only qcow2's can.", path);

    /// <summary>Amends the image's options in place, crash-safe; the caller holds the image's write lock.</summary>
    void Amend(SafeFileHandle handle, string path, ImageAmendOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        throw new KvmStorageException(ErrorKind.NotSupported, AmendErrorIds.AmendNotSupported, $"the options of {Format.ToQemuName()} images cannot be amended; only qcow2's can.", path);

    /// <summary>Writes a compact copy of the image <paramref name="source"/> into the empty file <paramref name="target"/>.</summary>
    void WriteCompactCopy(SafeFileHandle source, SafeFileHandle target, string path, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedFormat, path, $"optimizing {Format.ToQemuName()} images is not supported.");
}
