using KvmStorage.Core.Access;
using KvmStorage.Core.Backends;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Chains;
using KvmStorage.Core.Pools;

namespace KvmStorage.Core.Volumes;

/// <summary>A checked Merge-Volume: what changes, described for ShouldProcess before anything is written.</summary>
public sealed class VolumeMergePlan
{
    internal VolumeMergePlan(StorageVolume overlay, StorageVolume baseVolume, IReadOnlyList<StorageVolume> intermediates, ImageCommitPlan image, IReadOnlyList<string> sharedWith)
    {
        Overlay = overlay;
        Base = baseVolume;
        Intermediates = intermediates;
        Image = image;
        SharedWith = sharedWith;
    }

    public StorageVolume Overlay { get; }

    public StorageVolume Base { get; }

    /// <summary>Volumes between the overlay and the base, top first.</summary>
    public IReadOnlyList<StorageVolume> Intermediates { get; }

    public ImageCommitPlan Image { get; }

    /// <summary>Other images whose content changes with the base (allowed by -Force).</summary>
    public IReadOnlyList<string> SharedWith { get; }

    /// <summary>The action, in words, for ShouldProcess.</summary>
    public string Description
    {
        get
        {
            string layers = Intermediates.Count == 0 ? string.Empty : $" (and {string.Join(", ", Intermediates.Select(v => $"'{v.Path}'"))} above it)";
            string after = Image.Options.Overlay switch
            {
                OverlayDisposition.Remove => $"then DELETE '{Overlay.Path}'{(Intermediates.Count > 0 ? " and the layers above the base" : string.Empty)}",
                OverlayDisposition.Keep => "and keep the overlay as it is",
                _ => "then empty the overlay so it reads through to the base",
            };
            string grow = Image.GrowsBase ? $"; the base grows to {Sizes.ByteSize.Format(Overlay.Capacity)}" : string.Empty;
            string shared = SharedWith.Count == 0 ? string.Empty : $"; this also changes what {string.Join(", ", SharedWith)} read";
            return $"Commit the data of '{Overlay.Path}'{layers} into '{Base.Path}', {after}{grow}{shared}";
        }
    }
}

/// <summary>
/// Merge-Volume's checks that need the host: VMs using the images, and other images whose backing chain includes
/// an image the merge changes. The image work itself is <see cref="ImageCommitter"/>.
/// </summary>
public static class VolumeMerger
{
    /// <summary>
    /// Resolves the base (the overlay's backing file, or <paramref name="baseLocalPath"/> further down its chain) and
    /// refuses what must not be merged; nothing is written.
    /// </summary>
    public static VolumeMergePlan Plan(IKvmHost host, StorageVolume overlay, string? baseLocalPath, bool removeOverlay, bool force)
    {
        ArgumentNullException.ThrowIfNull(host);
        ArgumentNullException.ThrowIfNull(overlay);
        if (overlay.BackingPath is not null && overlay.Image.BackingChain.Count == 0)
        {
            // The image names a backing file that was not read: refused by the host's rule, or missing.
            throw overlay.BackingRefusal is { } refusal
                ? new KvmStorageException(ErrorKind.PermissionDenied, ImageErrorIds.BackingFileNotAllowed, refusal, overlay.Name)
                : new KvmStorageException(ErrorKind.NotFound, ImageErrorIds.BackingFileNotFound, $"The backing file '{overlay.BackingFile}' of '{overlay.Path}' does not exist (resolved to '{overlay.BackingPath}'); there is nothing to merge it into.", overlay.Name);
        }

        if (overlay.BackingPath is null)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, MergeErrorIds.NoBackingFile, $"Volume '{overlay.Path}' has no backing file: there is nothing to merge it into.", overlay.Name);
        }

        var files = new HostFiles(host);
        ImageCommitPlan image = ImageCommitter.Plan(overlay.LocalPath, new ImageCommitOptions
        {
            BasePath = baseLocalPath,
            Overlay = removeOverlay ? OverlayDisposition.Remove : OverlayDisposition.Empty,
            BackingRule = files.BackingRule,
        });

        // The base is written and, with -RemoveOverlay, the layers above it are deleted: files an image's chain names
        // (not the user) are written only when they are volumes of a pool. A base given with -Base is the user's choice.
        foreach ((string path, bool explicitlyNamed) in image.Intermediates.Select(i => (i.Path, false)).Append((image.Base.Path, baseLocalPath is not null)))
        {
            bool written = path == image.Base.Path || removeOverlay;
            if (written && !explicitlyNamed && !files.IsInsidePool(path))
            {
                string shown = host.Paths.ToHostPath(path) ?? path;
                throw new KvmStorageException(
                    ErrorKind.PermissionDenied,
                    AccessErrorIds.ChainFileNotWritable,
                    $"Merging '{overlay.Path}' would write '{shown}', which its backing chain names but which is not a volume of any storage pool; the module writes such a file only when you name it (-Base '{shown}').",
                    overlay.Name);
            }
        }

        StorageVolume baseVolume = host.GetVolumeByPath(image.Base.Path);
        StorageVolume[] intermediates = [.. image.Intermediates.Select(i => host.GetVolumeByPath(i.Path))];
        StorageVolume[] chain = [overlay, .. intermediates, baseVolume];

        // A running VM writes (the overlay) or reads (the layers below) these files: never change them under it.
        foreach (StorageVolume volume in chain)
        {
            string[] running = [.. volume.AttachedTo.Where(host.IsDomainActive)];
            if (running.Length > 0)
            {
                throw new KvmStorageException(
                    ErrorKind.ResourceBusy,
                    MergeErrorIds.InUseByRunningVM,
                    $"'{volume.Path}' is attached to running VM {string.Join(", ", running.Select(v => $"'{v}'"))}; shut it down before merging, or connect to its libvirtd (Connect-LibvirtHost) to merge a running VM's top overlay live.",
                    volume.Name);
            }
        }

        // Emptying keeps the overlay's own view, but the base and the emptied layers below the overlay read differently
        // afterwards: every other image built on them (a golden image's linked clones) and every VM using them, except
        // those that read them through the overlay (AttachedTo also lists VMs using an image as a backing file).
        HashSet<string> members = [.. chain.Select(v => v.Path)];
        var shared = new List<string>();
        foreach (StorageVolume changed in intermediates.Append(baseVolume))
        {
            shared.AddRange(changed.AttachedTo.Except(overlay.AttachedTo, StringComparer.Ordinal).Select(vm => $"VM '{vm}'"));
            shared.AddRange(BackingUsers.Find(host, changed.Path, members, overlay.Path));
        }

        shared = [.. shared.Distinct(StringComparer.Ordinal)];
        if (shared.Count > 0 && !force)
        {
            throw new KvmStorageException(
                ErrorKind.InvalidOperation,
                MergeErrorIds.BackingShared,
                $"Merging '{overlay.Path}' into '{baseVolume.Path}' would change what {string.Join(", ", shared)} read, because they use {(intermediates.Length > 0 ? "the base or a layer above it" : "the base")}. Use -Force to merge anyway.",
                overlay.Name);
        }

        if (removeOverlay)
        {
            foreach (StorageVolume gone in intermediates.Prepend(overlay))
            {
                if (gone.AttachedTo.Count > 0)
                {
                    throw new KvmStorageException(
                        ErrorKind.InvalidOperation,
                        VolumeErrorIds.VolumeAttached,
                        $"'{gone.Path}' is attached to VM {string.Join(", ", gone.AttachedTo.Select(v => $"'{v}'"))}; -RemoveOverlay would delete a disk it uses. Detach it first (Remove-VMDisk), or merge without -RemoveOverlay.",
                        gone.Name);
                }

                List<string> users = BackingUsers.Find(host, gone.Path, members);
                if (users.Count > 0)
                {
                    throw new KvmStorageException(
                        ErrorKind.InvalidOperation,
                        VolumeErrorIds.VolumeIsBackingFile,
                        $"'{gone.Path}' is the backing file of {string.Join(", ", users)}; -RemoveOverlay would break them. Merge without -RemoveOverlay.",
                        gone.Name);
                }
            }
        }

        return new VolumeMergePlan(overlay, baseVolume, intermediates, image, shared);
    }

    /// <summary>Runs a plan; returns the base volume as it now is.</summary>
    public static StorageVolume Execute(IKvmHost host, VolumeMergePlan plan, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(host);
        ArgumentNullException.ThrowIfNull(plan);
        ImageCommitResult result = ImageCommitter.Commit(plan.Image, progress, cancellationToken);
        if (result.Removed.Count > 0)
        {
            // A libvirt daemon lists pool contents from its own cache: let it see the deleted files.
            foreach (string? pool in plan.Intermediates.Prepend(plan.Overlay).Select(v => v.Pool).Distinct())
            {
                if (pool is not null)
                {
                    try
                    {
                        host.RefreshPool(pool);
                    }
                    catch (KvmStorageException)
                    {
                        // The merge is done; a stale listing is refreshed by the next Update-StoragePool.
                    }
                }
            }
        }

        return host.GetVolumeByPath(plan.Base.LocalPath);
    }
}
