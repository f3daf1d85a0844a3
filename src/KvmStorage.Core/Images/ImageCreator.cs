using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;

namespace KvmStorage.Core.Images;

/// <summary>Creates disk images like <c>qemu-img create</c>, never overwriting an existing file.</summary>
public static class ImageCreator
{
    private const UnixFileMode PermissionBits = (UnixFileMode)0x1FF;

    public static ImageInfo Create(string path, ImageCreateOptions options, IProgress<ImageProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(options);
        string fullPath = Path.GetFullPath(path);
        if (options.Encryption is not null && options.Format is not (ImageFormat.Qcow2 or ImageFormat.Raw or ImageFormat.Luks))
        {
            throw ImageErrors.Argument(Luks.LuksErrorIds.InvalidEncryptionOptions, $"{options.Format.ToQemuName()} images cannot be encrypted; qcow2 and raw (a LUKS file) can.", fullPath);
        }

        // An encrypted raw image is a LUKS file: what qemu-img create -f luks makes and libvirt calls raw with LUKS encryption.
        ImageFormat writeFormat = options.Format == ImageFormat.Raw && options.Encryption is not null ? ImageFormat.Luks : options.Format;
        IImageFormatWriter writer = ImageFormatRegistry.FindWriter(writeFormat)
            ?? throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedFormat, fullPath, $"creating {options.Format.ToQemuName()} images is not supported.");
        if (options.Fixed && !writer.TakesFixed)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, $"{options.Format.ToQemuName()} images have no fixed variant; vhdx, vpc and vdi have.", fullPath);
        }

        if (options.ForceSize && !writer.TakesForceSize)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, "Forcing the size applies to vpc (VHD) images only.", fullPath);
        }

        if ((options.Mode & ~PermissionBits) != 0)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, $"The mode {options.Mode} may only hold permission bits (0777).", fullPath);
        }

        ImageCreateOptions resolved = Resolve(fullPath, options);
        if (File.Exists(fullPath) || Directory.Exists(fullPath))
        {
            throw Exists(fullPath, null);
        }

        // A raw file is as long as the disk, a preallocated one at least as long: refuse one the file system cannot hold.
        if (resolved.Format == ImageFormat.Raw || resolved.Preallocation != Preallocation.Off)
        {
            FileSystemLimits.RequireFits(fullPath, resolved.VirtualSize!.Value);
        }

        // The image is written under a hidden temporary name and renamed only once complete and flushed: a crash
        // or a cancellation never leaves a half-written file under the final name (listings skip the prefix, and
        // the next pool operation removes stale temporaries).
        string temp = AtomicFile.TempPathFor(fullPath);
        FileStream stream;
        try
        {
            // Marked alive until closed: AtomicFile.RemoveAbandonedTempFiles only deletes temporaries whose writer died.
            stream = AtomicFile.CreateTemp(temp, resolved.Mode);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            TryDelete(temp);
            throw ImageErrors.FromIo(fullPath, e);
        }

        try
        {
            using (stream)
            {
                // The umask may have narrowed the mode at creation; make it exact.
                File.SetUnixFileMode(stream.SafeFileHandle, resolved.Mode);
                PosixFile.SetOwner(temp, resolved.Owner, resolved.Group);

                // The writer gets the final path: formats that record their own file name (vmdk extents) name it.
                writer.Create(stream.SafeFileHandle, fullPath, resolved, progress, cancellationToken);
                stream.Flush(flushToDisk: true);

                // Renamed while the lock is still held, so no cleaner can take the finished temporary for abandoned.
                try
                {
                    AtomicFile.MoveNoReplace(temp, fullPath);
                }
                catch (IOException e) when (File.Exists(fullPath) || Directory.Exists(fullPath))
                {
                    throw Exists(fullPath, e);
                }
            }
        }
        catch (Exception e)
        {
            TryDelete(temp);
            if (e is KvmStorageException or OperationCanceledException)
            {
                throw;
            }

            throw e switch
            {
                IOException when FileSystemLimits.IsTooLarge(e) => FileSystemLimits.TooLarge(fullPath, resolved.VirtualSize!.Value, e),
                UnauthorizedAccessException => new KvmStorageException(ErrorKind.PermissionDenied, ImageErrorIds.ImageWriteFailed, $"Cannot create '{fullPath}': {e.Message}", fullPath, e),
                IOException => new KvmStorageException(ErrorKind.WriteError, ImageErrorIds.ImageWriteFailed, $"Cannot create '{fullPath}': {e.Message}", fullPath, e),
                _ => e,
            };
        }

        try
        {
            return ImageInspector.Inspect(fullPath, new ImageInspectOptions { ForceShare = true, AllowMissingBacking = true, BackingRule = options.BackingRule });
        }
        catch (KvmStorageException)
        {
            // The image is made; a broken chain further down (a loop, a bad header) is the backing files' problem.
            return ImageInspector.Inspect(fullPath, new ImageInspectOptions { ForceShare = true, ResolveBackingChain = false });
        }
    }

    /// <summary>Fills in the virtual size and backing format from the backing file, as qemu-img does.</summary>
    private static ImageCreateOptions Resolve(string fullPath, ImageCreateOptions options)
    {
        ulong? size = options.VirtualSize;
        ImageFormat? backingFormat = options.BackingFormat;
        if (options.BackingFile is not null)
        {
            if (options.BackingFile.Length == 0)
            {
                throw ImageErrors.Argument(ImageErrorIds.InvalidBackingName, "The backing file name is empty.", fullPath);
            }

            string backingPath = ImageInspector.ResolveCheckedBackingPath(fullPath, options.BackingFile, options.BackingRule);
            if (!File.Exists(backingPath))
            {
                throw new KvmStorageException(ErrorKind.NotFound, ImageErrorIds.BackingFileNotFound, $"The backing file '{options.BackingFile}' (resolved to '{backingPath}') does not exist.", fullPath);
            }

            // The backing image's own chain passes the same rule: a clone of an image whose chain reaches a file the
            // rule refuses would hand that file to the guest through the new image.
            // Without a rule there is nothing to check below the backing image itself (qemu-img create reads only it).
            bool checkChain = options.BackingRule is not null && !ReferenceEquals(options.BackingRule, BackingFileRule.Unrestricted);
            ImageInfo backing = ImageInspector.Inspect(backingPath, new ImageInspectOptions { ForceShare = true, ResolveBackingChain = checkChain, AllowMissingBacking = true, Format = options.BackingFormat, BackingRule = options.BackingRule });
            if (backing.BackingRefusal is not null)
            {
                throw new KvmStorageException(ErrorKind.PermissionDenied, ImageErrorIds.BackingFileNotAllowed, $"'{options.BackingFile}' cannot back a new image: {backing.BackingRefusal}", fullPath);
            }

            size ??= backing.VirtualSize;
            backingFormat ??= backing.ImageFormat;
        }

        if (size is null)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidImageSize, "The virtual size is required when there is no backing file.", fullPath);
        }

        if (size.Value > long.MaxValue - 511)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidImageSize, $"The virtual size {size} is too large.", fullPath);
        }

        // qemu-img rounds the requested size up to whole 512-byte sectors.
        return options with { VirtualSize = (size.Value + 511) & ~511UL, BackingFormat = backingFormat };
    }

    private static KvmStorageException Exists(string path, Exception? inner) =>
        new(ErrorKind.AlreadyExists, ImageErrorIds.ImageExists, $"'{path}' already exists; images are never overwritten.", path, inner);

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
