using KvmStorage.Core.Errors;
using KvmStorage.Core.Images.Qcow2.Snapshots;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images;

/// <summary>
/// Internal snapshots of qcow2 images, like <c>qemu-img snapshot -l/-c/-a/-d</c>, holding QEMU-compatible write
/// locks: an image a running QEMU uses is refused with <c>ImageInUse</c>.
/// </summary>
public static class ImageSnapshots
{
    /// <summary>The snapshots of an image, in table order (empty for formats without internal snapshots).</summary>
    public static IReadOnlyList<SnapshotInfo> List(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        return ImageInspector.Inspect(path, new ImageInspectOptions { ForceShare = true, ResolveBackingChain = false }).Snapshots;
    }

    /// <summary>Takes a disk-only snapshot named <paramref name="name"/> (unique in the image) with qemu's next id.</summary>
    /// <returns>The new snapshot as the image now records it.</returns>
    public static SnapshotInfo Create(string path, string name)
    {
        ArgumentNullException.ThrowIfNull(name);

        // Refused before the image is locked or opened; the editor checks again before it writes.
        Qcow2SnapshotEditor.ValidateName(name);
        return Edit(path, "Creating a snapshot of", editor => editor.Create(name, DateTimeOffset.UtcNow));
    }

    /// <summary>Makes the image's content (and virtual size) what it was when the snapshot was taken; the snapshot stays.</summary>
    /// <returns>The snapshot reverted to.</returns>
    public static SnapshotInfo Revert(string path, string snapshot, SnapshotLookup lookup = SnapshotLookup.IdOrName)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        return Edit(path, "Reverting", editor =>
        {
            SnapshotInfo found = editor.Find(snapshot, lookup);
            editor.Revert(found);
            return found;
        });
    }

    /// <summary>Deletes a snapshot and frees the clusters only it used.</summary>
    /// <returns>The deleted snapshot.</returns>
    public static SnapshotInfo Delete(string path, string snapshot, SnapshotLookup lookup = SnapshotLookup.IdOrName)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        return Edit(path, "Deleting a snapshot of", editor =>
        {
            SnapshotInfo found = editor.Find(snapshot, lookup);
            editor.Delete(found);
            return found;
        });
    }

    private static SnapshotInfo Edit(string path, string action, Func<Qcow2SnapshotEditor, SnapshotInfo> work)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string fullPath = Path.GetFullPath(path);
        if (!File.Exists(fullPath))
        {
            throw new KvmStorageException(ErrorKind.NotFound, ImageErrorIds.ImageNotFound, $"The image '{fullPath}' does not exist.", fullPath);
        }

        using (ImageLock.AcquireForWriteAfterOwnChildren(fullPath))
        {
            SafeFileHandle handle;
            try
            {
                handle = File.OpenHandle(fullPath, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw ImageErrors.FromIo(fullPath, e);
            }

            using (handle)
            {
                try
                {
                    ImageFormat format = ImageFormatRegistry.Detect(ImageInspector.ReadProbe(handle, fullPath)).Format;
                    if (format != ImageFormat.Qcow2)
                    {
                        throw ImageErrors.NotSupported(ImageErrorIds.SnapshotsNotSupported, fullPath, $"{format.ToQemuName()} images have no internal snapshots; only qcow2 does.");
                    }

                    return work(Qcow2SnapshotEditor.Open(handle, fullPath));
                }
                catch (IOException e)
                {
                    throw new KvmStorageException(ErrorKind.WriteError, ImageErrorIds.ImageWriteFailed, $"{action} '{fullPath}' failed: {e.Message}", fullPath, e);
                }
            }
        }
    }
}

/// <summary>How a snapshot is looked up by its id or name.</summary>
public enum SnapshotLookup
{
    /// <summary>qemu-img's rule for <c>-a</c> and <c>-d</c>: an id first, then a name.</summary>
    IdOrName,

    /// <summary>Only the unique id (qemu assigns 1, 2, 3, ...).</summary>
    Id,

    /// <summary>Only the name.</summary>
    Name,
}
