using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images;

/// <summary>What <see cref="ImageAmender.Amend"/> changes (<c>qemu-img amend -o</c>); null leaves an option as it is.</summary>
public sealed record ImageAmendOptions
{
    /// <summary>qcow2 compatibility: "1.1" (version 3) or "0.10" (version 2).</summary>
    public string? Compat { get; init; }

    /// <summary>qcow2 lazy refcounts (compat 1.1 only).</summary>
    public bool? LazyRefcounts { get; init; }

    /// <summary>qcow2 refcount width: a power of two from 1 to 64 bits (16 for compat 0.10).</summary>
    public int? RefcountBits { get; init; }
}

/// <summary>An amendment checked against the image before anything is written: what it will change, in order.</summary>
public sealed record ImageAmendPlan
{
    /// <summary>The image.</summary>
    public required string Path { get; init; }

    /// <summary>The changes in the order they are made (upgrade, refcount width, lazy refcounts, downgrade); empty when there is nothing to change.</summary>
    public required IReadOnlyList<string> Changes { get; init; }

    /// <summary>The changes in one sentence, for a confirmation.</summary>
    public string Description => Changes.Count == 0
        ? "Nothing to change (the image already has these options)"
        : string.Concat(char.ToUpperInvariant(Changes[0][0]).ToString(), string.Join("; then ", Changes)[1..]);
}

/// <summary>Stable error identifiers of amendments.</summary>
public static class AmendErrorIds
{
    /// <summary>An option is invalid or contradicts another (qemu-img amend refuses it too).</summary>
    public const string InvalidAmendOptions = "InvalidAmendOptions";

    /// <summary>The format's options cannot be amended (only qcow2's can).</summary>
    public const string AmendNotSupported = "AmendNotSupported";

    /// <summary>The image holds something the change cannot keep (a refcount too large for a narrower width, a snapshot a version 2 image cannot describe, an incompatible feature).</summary>
    public const string AmendNotPossible = "AmendNotPossible";
}

/// <summary>
/// Changes an image's format options in place, like <c>qemu-img amend</c>: the qcow2 compatibility level (with zero
/// clusters turned into what a version 2 image can say), lazy refcounts and the refcount width. Every refusal is made
/// before the first write (<see cref="Plan"/>); each step then writes in crash-safe order, under QEMU-compatible write
/// locks, so an interrupted amendment leaves a valid image (at worst leaked clusters) with the guest's data unchanged.
/// </summary>
public static class ImageAmender
{
    /// <summary>Checks <paramref name="options"/> against the image and says what would change; writes nothing.</summary>
    public static ImageAmendPlan Plan(string path, ImageAmendOptions options)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(options);
        string fullPath = Path.GetFullPath(path);
        using SafeFileHandle handle = Open(fullPath, FileAccess.Read);
        return DriverOf(handle, fullPath).PlanAmend(handle, fullPath, options);
    }

    /// <summary>Amends the image (see <see cref="Plan"/> for the checks, made again here under the write lock).</summary>
    public static ImageInfo Amend(string path, ImageAmendOptions options, IProgress<ImageProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(options);
        string fullPath = Path.GetFullPath(path);
        using (ImageLock.AcquireForWrite(fullPath))
        using (SafeFileHandle handle = Open(fullPath, FileAccess.ReadWrite))
        {
            try
            {
                DriverOf(handle, fullPath).Amend(handle, fullPath, options, progress, cancellationToken);
            }
            catch (IOException e)
            {
                throw new KvmStorageException(ErrorKind.WriteError, ImageErrorIds.ImageWriteFailed, $"Amending '{fullPath}' failed: {e.Message}", fullPath, e);
            }
        }

        return ImageInspector.Inspect(fullPath, new ImageInspectOptions { ForceShare = true, AllowMissingBacking = true });
    }

    private static IImageFormat DriverOf(SafeFileHandle handle, string path) =>
        ImageFormatRegistry.Driver(ImageFormatRegistry.Detect(ImageInspector.ReadProbe(handle, path)).Format);

    private static SafeFileHandle Open(string path, FileAccess access)
    {
        try
        {
            return File.OpenHandle(path, FileMode.Open, access, FileShare.ReadWrite | FileShare.Delete);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw ImageErrors.FromIo(path, e);
        }
    }

    internal static KvmStorageException Invalid(string path, string message) =>
        new(ErrorKind.InvalidArgument, AmendErrorIds.InvalidAmendOptions, message, path);

    internal static KvmStorageException NotPossible(string path, string message) =>
        new(ErrorKind.InvalidOperation, AmendErrorIds.AmendNotPossible, message, path);

    /// <summary>Flushes what was written so far (the ordering points of every step).</summary>
    internal static void Flush(SafeFileHandle handle) => PositionalFile.Flush(handle);
}
