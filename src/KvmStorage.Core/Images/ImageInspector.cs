using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images;

/// <summary>Reads what an image file is, like <c>qemu-img info --backing-chain</c>, without running qemu.</summary>
public static class ImageInspector
{
    private const int HeadBytes = 64 * 1024;
    private const int TailBytes = 512;

    public static ImageInfo Inspect(string path, ImageInspectOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        options ??= new ImageInspectOptions();
        string fullPath = Path.GetFullPath(path);
        BackingFileRule rule = options.BackingRule ?? BackingFileRule.Unrestricted;
        ImageInfo top = ReadOne(fullPath, options.Format, options.ForceShare, rule);
        if (!options.ResolveBackingChain || string.IsNullOrEmpty(top.BackingFile))
        {
            return top;
        }

        var chain = new List<ImageInfo>();
        string? refusal = null;
        var seen = new HashSet<string>(StringComparer.Ordinal) { Identity(fullPath) };
        ImageInfo current = top;
        while (!string.IsNullOrEmpty(current.BackingFile) && current.FullBackingFile is not null)
        {
            if (chain.Count >= options.MaxChainDepth)
            {
                throw ImageErrors.Invalid(ImageErrorIds.BackingChainTooDeep, fullPath, $"the backing chain is deeper than {options.MaxChainDepth} images.");
            }

            string backingPath = current.FullBackingFile;

            // The rule sees the name before anything is looked at: a name that leaves the host root is not even
            // tested for existence, and a file a guest must not see is never opened.
            try
            {
                rule.Check(current.Path, current.BackingFile, backingPath);
            }
            catch (KvmStorageException e) when (options.AllowMissingBacking && BackingFileRule.IsRefusal(e))
            {
                refusal = e.Message;
                break;
            }

            if (!File.Exists(backingPath))
            {
                if (options.AllowMissingBacking)
                {
                    break;
                }

                throw new KvmStorageException(
                    ErrorKind.NotFound,
                    ImageErrorIds.BackingFileNotFound,
                    $"The backing file '{current.BackingFile}' of '{current.Path}' does not exist (resolved to '{backingPath}').",
                    current.Path);
            }

            // A device, FIFO or socket named as backing file is never opened: a FIFO would block the reader for
            // ever and a device is no image (qcow2 written by a hostile guest or user can name anything).
            if (!IsRegularFile(backingPath))
            {
                throw new KvmStorageException(
                    ErrorKind.PermissionDenied,
                    ImageErrorIds.BackingFileNotRegular,
                    $"The backing file '{current.BackingFile}' of '{current.Path}' resolves to '{backingPath}', which is not a regular file; it is not read.",
                    current.Path);
            }

            if (!seen.Add(Identity(backingPath)))
            {
                throw ImageErrors.Invalid(ImageErrorIds.BackingChainLoop, fullPath, $"the backing chain loops back to '{backingPath}'.");
            }

            ImageFormat? format = ImageFormats.TryParse(current.BackingFormat, out ImageFormat recorded) ? recorded : options.BackingFormat;
            ImageInfo next = ReadOne(backingPath, format, options.ForceShare, rule);
            chain.Add(next);
            current = next;
        }

        return Rebuild(top, chain, refusal);
    }

    public static ImageFormat DetectFormat(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string fullPath = Path.GetFullPath(path);
        using SafeFileHandle handle = Open(fullPath);
        return ImageFormatRegistry.Detect(ReadProbe(handle, fullPath)).Format;
    }

    /// <summary>The file a recorded backing name names on this machine, by <paramref name="rule"/> (qemu's <c>path_combine</c> when null).</summary>
    public static string ResolveBackingPath(string imagePath, string backingFile, BackingFileRule? rule = null) =>
        (rule ?? BackingFileRule.Unrestricted).Resolve(imagePath, backingFile);

    /// <summary>
    /// Resolves a backing name that is about to be opened directly (as the top of a reader, not through
    /// <see cref="Inspect"/>'s chain walk) and passes it through <paramref name="rule"/>'s check first.
    /// </summary>
    public static string ResolveCheckedBackingPath(string imagePath, string backingFile, BackingFileRule? rule)
    {
        rule ??= BackingFileRule.Unrestricted;
        string resolved = rule.Resolve(imagePath, backingFile);
        rule.Check(imagePath, backingFile, resolved);
        return resolved;
    }

    internal static ImageProbe ReadProbe(SafeFileHandle handle, string path)
    {
        try
        {
            ulong length = (ulong)RandomAccess.GetLength(handle);
            byte[] head = new byte[(int)Math.Min((ulong)HeadBytes, length)];
            ReadFully(handle, head, 0);
            int tailLength = (int)Math.Min((ulong)TailBytes, length);
            byte[] tail = new byte[tailLength];
            ReadFully(handle, tail, length - (ulong)tailLength);
            return new ImageProbe(path, head, tail, length);
        }
        catch (IOException e)
        {
            throw ImageErrors.FromIo(path, e);
        }
    }

    private static ImageInfo ReadOne(string path, ImageFormat? format, bool forceShare, BackingFileRule rule)
    {
        // open(2) of a FIFO blocks until a writer appears: never open one (nor a socket) as an image.
        if (File.Exists(path) && FileKind(path) is 0x1000 or 0xC000)
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, ImageErrorIds.BackingFileNotRegular, $"'{path}' is a FIFO or a socket, not an image file; it is not opened.", path);
        }

        using SafeFileHandle handle = Open(path);
        if (!forceShare)
        {
            ImageLock.EnsureNotInUse(path, forWrite: false);
        }

        ImageProbe probe = ReadProbe(handle, path);
        IImageFormatReader reader = format is { } f
            ? ImageFormatRegistry.FindReader(f) ?? ImageFormatRegistry.Detect(probe)
            : ImageFormatRegistry.Detect(probe);
        ulong actualSize;
        try
        {
            actualSize = FileStatus.Get(path).AllocatedBytes;
        }
        catch (IOException e)
        {
            throw ImageErrors.FromIo(path, e);
        }

        ImageInfo info;
        try
        {
            info = reader.ReadInfo(handle, probe, actualSize);
        }
        catch (KvmStorageException)
        {
            throw;
        }
        catch (Exception e) when (e is IOException or ArgumentException or OverflowException or InvalidOperationException or IndexOutOfRangeException or OutOfMemoryException)
        {
            // A reader that trips over a value it failed to check still reports a typed error.
            throw ImageErrors.Invalid(ImageErrorIds.InvalidMetadata, path, $"the {reader.Format.ToQemuName()} metadata is malformed ({e.Message}).");
        }

        if (info.BackingFile is { Length: > 0 } backing && (info.FullBackingFile is null || !ReferenceEquals(rule, BackingFileRule.Unrestricted)))
        {
            info = CopyWith(info, rule.Resolve(path, backing), info.BackingChain, null);
        }

        // Whatever the format, an image that reads through a backing file stores only what differs from it.
        return info.BackingFile is { Length: > 0 } ? info with { DiskType = DiskType.Differencing } : info;
    }

    private static SafeFileHandle Open(string path)
    {
        try
        {
            return File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw ImageErrors.FromIo(path, e);
        }
    }

    private static void ReadFully(SafeFileHandle handle, Span<byte> buffer, ulong offset)
    {
        if (PositionalFile.ReadUntilEnd(handle, buffer, offset) < buffer.Length)
        {
            throw new IOException("The file shrank while it was being read.");
        }
    }

    private static uint FileKind(string path)
    {
        try
        {
            return FileStatus.Get(path).Mode & 0xF000;
        }
        catch (IOException)
        {
            return 0;
        }
    }

    /// <summary>True for a regular file (after symlinks); false for devices, FIFOs, sockets and folders.</summary>
    internal static bool IsRegularFile(string path)
    {
        try
        {
            return (FileStatus.Get(path).Mode & 0xF000) == 0x8000;
        }
        catch (IOException)
        {
            return false;
        }
    }

    internal static string Identity(string path)
    {
        try
        {
            var file = new FileInfo(Path.GetFullPath(path));
            FileSystemInfo? target = file.LinkTarget is null ? null : file.ResolveLinkTarget(returnFinalTarget: true);
            return target?.FullName ?? file.FullName;
        }
        catch (IOException)
        {
            return Path.GetFullPath(path);
        }
    }

    private static ImageInfo Rebuild(ImageInfo top, IReadOnlyList<ImageInfo> chain, string? refusal) => CopyWith(top, top.FullBackingFile, chain, refusal);

    private static ImageInfo CopyWith(ImageInfo info, string? fullBackingFile, IReadOnlyList<ImageInfo> chain, string? refusal) =>
        info with { FullBackingFile = fullBackingFile, BackingChain = chain, BackingRefusal = refusal };
}
