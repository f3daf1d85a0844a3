using KvmStorage.Core.Backends;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Chains;
using KvmStorage.Core.Images.Check;
using KvmStorage.Core.Volumes;

namespace KvmStorage.Core.Access;

/// <summary>
/// One checked operation on a volume, prepared before any question is asked: every refusal the real run would make
/// (read-only connection, containment, the engine's own preconditions that need no write) has already happened, so
/// <c>-WhatIf</c> promises exactly what <see cref="Run"/> does.
/// </summary>
public sealed class VolumeAction<T>
{
    internal VolumeAction(string target, string description, Func<IProgress<ImageProgress>?, CancellationToken, T> run, bool destroysData = false)
    {
        Target = target;
        Description = description;
        Run = run;
        DestroysData = destroysData;
    }

    /// <summary>True when the action throws away data for good (a shrink): the cmdlet asks as for a delete.</summary>
    public bool DestroysData { get; }

    /// <summary>What ShouldProcess names: the volume's host path.</summary>
    public string Target { get; }

    /// <summary>The action, in words.</summary>
    public string Description { get; }

    /// <summary>Does the work, then lets a libvirt daemon see the changed pool.</summary>
    public Func<IProgress<ImageProgress>?, CancellationToken, T> Run { get; }
}

/// <summary>
/// The policy of every image operation the cmdlets run, in one place: resolution and containment
/// (<see cref="VolumeLocator"/>), writability (<see cref="IKvmHost.EnsureWritable"/>), the engine call with the host's
/// backing-file rule, and the pool refresh after a write. A cmdlet makes one call here per item and never calls the
/// image engine itself.
/// </summary>
public sealed class VolumeOperations(IKvmHost host)
{
    private readonly VolumeLocator locator = new(host);

    public VolumeLocator Locator => locator;

    /// <summary>Checks (and with <paramref name="repair"/>, repairs) an image's metadata, like <c>qemu-img check [-r]</c>.</summary>
    public VolumeAction<ImageCheckResult> Check(VolumeSpec spec, ImageRepairMode repair, ImagePassphrase? passphrase = null, bool forceShare = false)
    {
        string file = locator.File(spec);
        string shown = Shown(file);
        if (repair != ImageRepairMode.None)
        {
            host.EnsureWritable($"Repairing '{Path.GetFileName(file)}'", shown);
        }

        string action = repair == ImageRepairMode.None ? "Check the image metadata" : $"Repair the image metadata ({repair})";
        return new(shown, action, (progress, token) =>
        {
            // The metadata check needs no key; given one, it is proven to open the image first (qemu-img check asks for it).
            VerifyPassphrase(file, passphrase);
            ImageCheckResult result = ImageChecker.Check(file, repair, forceShare, progress, token);
            if (repair != ImageRepairMode.None)
            {
                Refresh(file, $"'{shown}' was repaired");
            }

            // Like every object the module emits, the result names the image as the host sees it.
            return result with { Path = shown };
        });
    }

    /// <summary>Frees data that reads as zeros; with <paramref name="compact"/> also rewrites the image compactly.</summary>
    public VolumeAction<ImageOptimizeResult> Optimize(VolumeSpec spec, bool compact)
    {
        string file = locator.File(spec);
        string shown = Shown(file);
        host.EnsureWritable($"Optimizing '{Path.GetFileName(file)}'", shown);
        string action = compact ? "Free all-zero data and rewrite the image compactly" : "Free all-zero data";
        return new(shown, action, (progress, token) =>
        {
            ImageOptimizeResult result = ImageOptimizer.Optimize(file, compact, progress, token);
            Refresh(file, $"'{shown}' was optimized");
            return result with { Path = shown };
        });
    }

    /// <summary>Compares what a guest sees in two images, like <c>qemu-img compare</c>; both chains pass the host's rule.</summary>
    public VolumeAction<ImageCompareResult> Compare(VolumeSpec reference, VolumeSpec difference, bool strict, ImagePassphrase? passphrase = null, bool forceShare = false)
    {
        string first = locator.File(reference);
        string second = locator.File(difference);
        var options = new BlockOpenOptions { BackingRule = locator.Files.BackingRule, Passphrase = passphrase, ForceShare = forceShare };
        return new(Shown(second), $"Compare with '{Shown(first)}'", (progress, token) => ImageComparer.Compare(first, second, strict, options, progress, token));
    }

    /// <summary>
    /// The allocation map of a volume through its chain, as <c>qemu-img map --output=json</c> gives it; files are named as
    /// the host sees them. Read-only: QEMU's locks are respected as qemu-img map respects them.
    /// </summary>
    public VolumeAction<IReadOnlyList<Images.Map.MapExtent>> Map(VolumeSpec spec, ulong start, ulong? length, ImagePassphrase? passphrase = null)
    {
        string file = locator.File(spec);
        string shown = Shown(file);
        var options = new BlockOpenOptions { BackingRule = locator.Files.BackingRule, Passphrase = passphrase };
        return new(shown, "Map the allocation", (progress, token) =>
            [.. Images.Map.ImageMapper.Map(file, options, start, length, progress, token).Select(e => e with { Path = shown, File = e.File is null ? null : Shown(e.File) })]);
    }

    /// <summary>
    /// What converting a volume (or, without one, creating an image of <paramref name="size"/> bytes) with
    /// <paramref name="options"/> would need, as <c>qemu-img measure</c> says it. Read-only.
    /// </summary>
    public VolumeAction<Images.Measure.ImageMeasurement> Measure(VolumeSpec? spec, ulong? size, Images.Measure.MeasureOptions options, ImagePassphrase? passphrase = null)
    {
        if (spec is null)
        {
            return new("new image", "Measure", (progress, token) => Images.Measure.ImageMeasurer.Measure(null, size, options, progress, token));
        }

        string file = locator.File(spec);
        string shown = Shown(file);
        var open = new BlockOpenOptions { BackingRule = locator.Files.BackingRule, Passphrase = passphrase }.ForMetadata();
        return new(shown, "Measure", (progress, token) =>
        {
            using IBlockReader reader = BlockReaders.Open(file, open);
            return Images.Measure.ImageMeasurer.Measure(reader, null, options, progress, token) with { Path = shown };
        });
    }

    /// <summary>
    /// Changes a volume's format options in place (<c>qemu-img amend</c>): every refusal (a connection that may not write,
    /// an image its check flags, an option the image cannot take) is made here, before anything is asked.
    /// </summary>
    public VolumeAction<StorageVolume> Amend(VolumeSpec spec, ImageAmendOptions options)
    {
        StorageVolume volume = Writable(spec, "Amending");
        ImageAmendPlan plan = ImageAmender.Plan(volume.LocalPath, options);
        return new(volume.Path, plan.Description, (progress, token) =>
        {
            if (plan.Changes.Count > 0)
            {
                ImageAmender.Amend(volume.LocalPath, options, progress, token);
                Refresh(volume.LocalPath, $"'{volume.Path}' was amended");
            }

            return locator.Get(VolumeSpec.Of(volume));
        });
    }

    /// <summary>Creates an internal snapshot of a qcow2 volume.</summary>
    public VolumeAction<SnapshotInfo> CreateSnapshot(VolumeSpec spec, string name, ImagePassphrase? passphrase = null)
    {
        StorageVolume volume = Writable(spec, "Creating a snapshot of");
        RequireQcow2(volume);
        return new(volume.Path, $"Create snapshot '{name}'", (_, _) =>
        {
            VerifyPassphrase(volume.LocalPath, passphrase);
            return Changed(volume, ImageSnapshots.Create(volume.LocalPath, name), "a snapshot was created");
        });
    }

    /// <summary>Deletes an internal snapshot (by its id, which <see cref="FindSnapshot"/> gives).</summary>
    public VolumeAction<SnapshotInfo> DeleteSnapshot(VolumeSpec spec, string? id, string? name, ImagePassphrase? passphrase = null)
    {
        StorageVolume volume = Writable(spec, "Deleting a snapshot of");
        SnapshotInfo snapshot = FindSnapshot(volume, id, name);
        return new(volume.Path, $"Delete snapshot '{snapshot.Name}' (id {snapshot.Id})", (_, _) =>
        {
            VerifyPassphrase(volume.LocalPath, passphrase);
            return Changed(volume, ImageSnapshots.Delete(volume.LocalPath, snapshot.Id, SnapshotLookup.Id), "a snapshot was deleted");
        });
    }

    /// <summary>Reverts a volume to an internal snapshot: what was written since is lost.</summary>
    public VolumeAction<SnapshotInfo> RevertSnapshot(VolumeSpec spec, string? id, string? name, ImagePassphrase? passphrase = null)
    {
        StorageVolume volume = Writable(spec, "Reverting to a snapshot");
        SnapshotInfo snapshot = FindSnapshot(volume, id, name);
        string taken = snapshot.Date.ToLocalTime().ToString("g", System.Globalization.CultureInfo.CurrentCulture);
        return new(volume.Path, $"Revert to snapshot '{snapshot.Name}' (id {snapshot.Id}, taken {taken}); changes made since are lost", (_, _) =>
        {
            VerifyPassphrase(volume.LocalPath, passphrase);
            return Changed(volume, ImageSnapshots.Revert(volume.LocalPath, snapshot.Id, SnapshotLookup.Id), "it was reverted to a snapshot");
        });
    }

    /// <summary>
    /// Changes a qcow2 volume's backing file like <c>qemu-img rebase</c>: onto <paramref name="backing"/> (or none when
    /// null), with the guest view kept unless <paramref name="unsafeRebase"/>.
    /// </summary>
    public VolumeAction<StorageVolume> Rebase(VolumeSpec spec, VolumeSpec? backing, ImageFormat? backingFormat, bool relative, bool unsafeRebase)
    {
        StorageVolume volume = Writable(spec, "Rebasing");
        StorageVolume? newBacking = backing is null ? null : locator.Get(backing);
        string? recorded = newBacking?.Path;
        if (newBacking is not null && relative)
        {
            recorded = Path.GetRelativePath(Path.GetDirectoryName(volume.Path)!, newBacking.Path);
        }

        var options = new RebaseOptions
        {
            BackingFile = recorded,
            BackingFormat = backingFormat,
            Unsafe = unsafeRebase,
            BackingRule = locator.Files.BackingRule,
        };
        string what = (recorded, unsafeRebase) switch
        {
            (null, false) => $"Make standalone (copy the data it reads from '{volume.BackingPath}' into it)",
            (null, true) => "Drop the backing file without copying its data (the guest loses what it read from it)",
            (_, false) => $"Rebase onto '{recorded}' (copy what differs from '{volume.BackingPath}' first, so the guest sees the same data)",
            (_, true) => $"Record '{recorded}' as backing file without comparing contents",
        };
        return new(volume.Path, what, (progress, token) =>
        {
            ImageRebaser.Rebase(volume.LocalPath, options, progress, token);

            // A libvirt daemon caches each volume's backing store until its pool is refreshed.
            Refresh(volume.LocalPath, $"'{volume.Path}' was rebased");
            return locator.Get(VolumeSpec.Of(volume));
        });
    }

    /// <summary>Commits an overlay into its backing file (<c>qemu-img commit</c>); see <see cref="VolumeMerger"/>.</summary>
    public VolumeAction<StorageVolume> Merge(VolumeSpec spec, VolumeSpec? baseSpec, bool removeOverlay, bool force)
    {
        // The overlay a running VM writes to is merged by libvirt (block commit, then pivot) when a daemon is there.
        StorageVolume attached = locator.Get(spec);
        if (host is IBlockJobs && attached.AttachedTo.Where(host.IsDomainActive).ToArray() is [string vm])
        {
            host.EnsureWritable($"Merging '{attached.Name}'", attached.Path);
            var jobs = new Domains.Jobs.VMDiskJobs(host);
            Domains.Jobs.ActiveCommitPlan live = jobs.PlanActiveCommit(vm, attached, baseSpec is null ? null : locator.Get(baseSpec).LocalPath, removeOverlay, force);
            return new(attached.Path, live.Description, (progress, token) => jobs.ActiveCommit(live, progress, token));
        }

        StorageVolume overlay = Writable(spec, "Merging");
        string? baseLocal = baseSpec is null ? null : locator.Get(baseSpec).LocalPath;
        VolumeMergePlan plan = VolumeMerger.Plan(host, overlay, baseLocal, removeOverlay, force);
        EnsureSound(plan.Base);
        return new(overlay.Path, plan.Description, (progress, token) => VolumeMerger.Execute(host, plan, progress, token));
    }

    /// <summary>
    /// Deletes a pool volume's image. Every refusal of the real run (not in a pool, attached to a VM, another image's
    /// backing file, held open by a writer, a read-only connection) is made here, before anything is asked.
    /// </summary>
    public VolumeAction<bool> Remove(VolumeSpec spec, bool force)
    {
        StorageVolume volume = locator.Get(spec);
        if (volume.Pool is not { } pool)
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, VolumeErrorIds.VolumeNotFound, $"'{volume.Path}' is not in a storage pool; Remove-Volume deletes pool volumes only.", volume.Path);
        }

        host.EnsureWritable($"Deleting volume '{volume.Name}'", volume.Path);
        VolumeRemoval.EnsureRemovable(host, volume, force);
        string description = $"Delete the volume's image file ({volume.Format}, {Sizes.ByteSize.Format(volume.Capacity)})";
        return new(volume.Path, description, (_, _) =>
        {
            host.RemoveVolume(pool, volume.Name, force);
            return true;
        });
    }

    /// <summary>
    /// Changes a pool volume's virtual size to <paramref name="size"/>, or by <paramref name="delta"/> (taken away with
    /// <paramref name="shrink"/>); exactly one of the two. The grown part is allocated as <paramref name="preallocation"/>
    /// says, or as the image was (a fully allocated raw image stays fully allocated).
    /// </summary>
    public VolumeAction<StorageVolume> Resize(VolumeSpec spec, ulong? size, ulong? delta, bool shrink, Preallocation? preallocation)
    {
        if (size.HasValue == delta.HasValue)
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, VolumeErrorIds.InvalidSize, "Give either a new size or a delta, not both and not neither.", spec.ToString());
        }

        StorageVolume volume = locator.Get(spec);
        if (volume.Pool is not { } pool)
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, VolumeErrorIds.VolumeNotFound, $"'{volume.Path}' is not in a storage pool; Resize-Volume resizes pool volumes only.", volume.Path);
        }

        ulong target = size ?? (shrink
            ? (delta!.Value > volume.Capacity
                ? throw new KvmStorageException(ErrorKind.InvalidArgument, VolumeErrorIds.InvalidSize, $"Cannot shrink {Sizes.ByteSize.Format(volume.Capacity)} by {Sizes.ByteSize.Format(delta.Value)}.", volume.Path)
                : volume.Capacity - delta.Value)
            : (volume.Capacity + delta!.Value < volume.Capacity
                ? throw new KvmStorageException(ErrorKind.InvalidArgument, VolumeErrorIds.InvalidSize, "The new size overflows.", volume.Path)
                : volume.Capacity + delta.Value));

        if (target < volume.Capacity && !shrink)
        {
            // Refused here, before any question is asked, as the engine would refuse it.
            throw new KvmStorageException(ErrorKind.InvalidOperation, ImageErrorIds.ShrinkNotAllowed, $"Shrinking '{volume.Path}' from {Sizes.ByteSize.Format(volume.Capacity)} to {Sizes.ByteSize.Format(target)} loses the data past the new end; give -Shrink to allow it.", volume.Path);
        }

        host.EnsureWritable($"Resizing volume '{volume.Name}'", volume.Path);
        EnsureSound(volume);
        var options = new ImageResizeOptions { AllowShrink = shrink, Preallocation = preallocation ?? VolumePreallocation.Infer(volume) };
        string action = target < volume.Capacity ? "Shrink" : "Grow";
        string description = $"{action} from {Sizes.ByteSize.Format(volume.Capacity)} to {Sizes.ByteSize.Format(target)}";
        return new(volume.Path, description, (progress, token) => host.ResizeVolume(pool, volume.Name, target, options, progress, token), destroysData: target < volume.Capacity);
    }

    /// <summary>The snapshot with this id and/or name (both must match when both are given).</summary>
    public static SnapshotInfo FindSnapshot(StorageVolume volume, string? id, string? name)
    {
        ArgumentNullException.ThrowIfNull(volume);
        RequireQcow2(volume);
        SnapshotInfo? found = volume.Snapshots.FirstOrDefault(s => (id is null || s.Id == id) && (name is null || s.Name == name));
        if (found is null)
        {
            string what = (id, name) switch
            {
                (not null, not null) => $"'{name}' (id {id})",
                (not null, null) => $"with id '{id}'",
                _ => $"named '{name}'",
            };
            throw new KvmStorageException(ErrorKind.NotFound, ImageErrorIds.SnapshotNotFound, $"'{volume.Path}' has no snapshot {what}.", name ?? id);
        }

        return found;
    }

    /// <summary>Refuses volumes that cannot hold internal snapshots.</summary>
    /// <summary>
    /// Defines the libvirt secret of an encrypted volume (usage: its host path), so a VM given the volume can open it.
    /// The passphrase is proven to open the volume first: a secret that would not start the VM is never stored.
    /// </summary>
    public VolumeAction<Secrets.VolumeSecret> DefineSecret(VolumeSpec spec, ImagePassphrase passphrase, Guid? uuid, string? description)
    {
        ArgumentNullException.ThrowIfNull(passphrase);
        StorageVolume volume = locator.Get(spec);
        host.EnsureWritable($"Defining a secret for '{volume.Name}'", volume.Path);
        if (volume.Encryption != "luks")
        {
            throw new KvmStorageException(
                ErrorKind.InvalidArgument,
                Images.Luks.LuksErrorIds.InvalidEncryptionOptions,
                $"'{volume.Path}' is not LUKS-encrypted; only an encrypted volume has a secret.",
                volume.Path);
        }

        if (host.ListSecrets().FirstOrDefault(s => s.UsageType == "volume" && s.Usage == volume.Path) is { } taken)
        {
            throw new KvmStorageException(ErrorKind.AlreadyExists, Secrets.SecretErrorIds.SecretExists, $"The secret {taken.Uuid} is already defined for '{volume.Path}'; remove it first (Remove-VolumeSecret).", volume.Path);
        }

        return new(volume.Path, "Define the libvirt secret that opens the volume", (_, _) =>
        {
            BlockReaders.VerifyPassphrase(volume.LocalPath, passphrase, locator.Files.BackingRule);
            return host.DefineVolumeSecret(volume.Path, passphrase, uuid, description);
        });
    }

    /// <summary>
    /// Snapshots and checks touch metadata only and need no key; a passphrase given for an encrypted image is proven
    /// first, as qemu-img proves it, so a wrong one fails (<c>WrongPassphrase</c>) before anything is written.
    /// </summary>
    private void VerifyPassphrase(string file, ImagePassphrase? passphrase)
    {
        if (passphrase is not null)
        {
            BlockReaders.VerifyPassphrase(file, passphrase, locator.Files.BackingRule);
        }
    }

    public static void RequireQcow2(StorageVolume volume)
    {
        ArgumentNullException.ThrowIfNull(volume);
        if (volume.ImageFormat != ImageFormat.Qcow2)
        {
            throw new KvmStorageException(ErrorKind.NotSupported, ImageErrorIds.SnapshotsNotSupported, $"'{volume.Path}' is a {volume.Format} image; only qcow2 images have internal snapshots.", volume.Path);
        }
    }

    private StorageVolume Writable(VolumeSpec spec, string verb)
    {
        StorageVolume volume = locator.Get(spec);
        host.EnsureWritable($"{verb} '{volume.Name}'", volume.Path);
        EnsureSound(volume);
        return volume;
    }

    /// <summary>
    /// Before any write into a qcow2 image, the image is checked as qemu would open it: a dirty or corrupt mark, or
    /// errors of its metadata (a cluster used twice, a table pointing at the header, a snapshot sharing the active
    /// L1 table) make a write unsafe, and it is refused with the checker's finding; Test-Volume -Repair is the way out.
    /// Leaked clusters are harmless and allowed, as qemu allows them.
    /// </summary>
    private void EnsureSound(StorageVolume volume)
    {
        if (volume.ImageFormat != ImageFormat.Qcow2 || !host.IsLocal || !File.Exists(volume.LocalPath))
        {
            return;
        }

        ImageCheckResult check = ImageChecker.Check(volume.LocalPath);

        // Stale copied flags (refcount above 1) are what a snapshot operation killed midway leaves, as qemu's own does;
        // the snapshot commands and the allocating writer go by refcounts, and running the command again repairs them.
        ImageCorruption[] unsafeFindings = [.. check.Corruptions.Where(c => c.Kind is not (ImageCorruptionKind.LeakedCluster or ImageCorruptionKind.CopiedFlagMismatch))];
        string? finding = check switch
        {
            { MarkedCorrupt: true } => "it is marked corrupt",
            { DirtyFlag: true } => "it is marked dirty (not closed cleanly with lazy refcounts)",
            { CheckErrors: > 0 } => $"part of its metadata cannot be read ({check.CheckErrors} check error(s))",
            _ when unsafeFindings.Length > 0 => $"its check finds {unsafeFindings.Length} error(s), first {unsafeFindings[0]}",
            _ => null,
        };
        if (finding is not null)
        {
            throw new KvmStorageException(
                ErrorKind.InvalidData,
                ImageErrorIds.ImageCheckFailed,
                $"'{volume.Path}' is not written: {finding}. Run Test-Volume -Repair All (qemu-img check -r all) first.",
                volume.Path);
        }
    }

    private T Changed<T>(StorageVolume volume, T result, string done)
    {
        Refresh(volume.LocalPath, $"'{volume.Path}' changed ({done})");
        return result;
    }

    private void Refresh(string localFile, string done)
    {
        if (locator.Files.PoolOf(localFile) is { } pool)
        {
            host.RefreshAfterWrite(pool, done);
        }
    }

    private string Shown(string localFile) => host.Paths.ToHostPath(localFile) ?? localFile;
}
