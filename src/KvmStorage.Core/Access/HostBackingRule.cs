using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.IO;

namespace KvmStorage.Core.Access;

/// <summary>
/// The host's rule for backing files (see <see cref="HostFiles"/>): names resolve under the host root and never leave
/// it; a raw or unrecognised file outside every file pool is never read as a backing file. With
/// <paramref name="hostView"/> false (an image given as a local file, such as Import-Volume's source), names are this
/// machine's own, and only the pool-or-image rule applies.
/// </summary>
internal sealed class HostBackingRule(HostFiles files, bool hostView) : BackingFileRule
{
    public override string Resolve(string imagePath, string backingName)
    {
        ArgumentNullException.ThrowIfNull(imagePath);
        ArgumentNullException.ThrowIfNull(backingName);
        if (backingName.Contains("://", StringComparison.Ordinal))
        {
            return backingName;
        }

        // Absolute names are the host's view; relative ones are relative to the image's folder (qemu's path_combine).
        return Path.IsPathRooted(backingName)
            ? hostView ? files.Paths.Resolve(backingName) : Path.GetFullPath(backingName)
            : Path.GetFullPath(Path.Combine(Path.GetDirectoryName(imagePath)!, backingName));
    }

    public override void Check(string imagePath, string backingName, string resolvedPath)
    {
        if (backingName.Contains("://", StringComparison.Ordinal))
        {
            return; // Not a file: the readers report it as missing.
        }

        string shown = files.Paths.ToHostPath(imagePath) ?? imagePath;
        if (hostView && files.Paths.ToHostPath(resolvedPath) is null)
        {
            throw OutsideRoot(shown, backingName);
        }

        bool exists = File.Exists(resolvedPath) || new FileInfo(resolvedPath).LinkTarget is not null;
        if (!exists)
        {
            return; // The caller reports a missing backing file.
        }

        string? real = PosixFile.RealPath(resolvedPath);
        if (hostView && !files.Paths.IsSystemRoot && (real is null || !PosixFile.IsUnder(real, files.RealRoot)))
        {
            throw OutsideRoot(shown, backingName);
        }

        // Devices, FIFOs and sockets are refused by the caller without being opened (a FIFO would block a probe).
        if (real is null || !ImageInspector.IsRegularFile(real) || files.IsInsidePool(resolvedPath))
        {
            return;
        }

        ImageFormat format;
        try
        {
            format = ImageInspector.DetectFormat(resolvedPath);
        }
        catch (KvmStorageException)
        {
            format = ImageFormat.Raw;
        }

        if (format == ImageFormat.Raw)
        {
            throw new KvmStorageException(
                ErrorKind.PermissionDenied,
                ImageErrorIds.BackingFileNotAllowed,
                $"The backing file '{backingName}' of '{shown}' is outside every storage pool and is not a disk image of a recognised format; it is not read (its bytes would reach the guest). Put a raw image in a pool folder to use it as a backing file.",
                shown);
        }
    }

    private KvmStorageException OutsideRoot(string image, string backingName) => new(
        ErrorKind.PermissionDenied,
        ImageErrorIds.BackingFileOutsideRoot,
        $"The backing file '{backingName}' of '{image}' resolves outside the host root '{files.Paths.Root}'; it is not read.",
        image);
}
