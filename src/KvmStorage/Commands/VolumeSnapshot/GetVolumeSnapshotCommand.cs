using System.Management.Automation;
using KvmStorage.Core.Access;
using KvmStorage.Core.Backends;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VolumeSnapshot;

/// <summary>Get-VolumeSnapshot: lists the internal snapshots of qcow2 volumes.</summary>
[Cmdlet(VerbsCommon.Get, "VolumeSnapshot")]
[OutputType(typeof(Core.Volumes.VolumeSnapshot))]
public sealed class GetVolumeSnapshotCommand : KvmCmdlet
{
    /// <summary>The volumes, as Get-Volume objects or image paths; every volume of every file pool when omitted.</summary>
    [Parameter(Position = 0, ValueFromPipeline = true)]
    public VolumeReference[]? Volume { get; set; }

    /// <summary>Snapshot names; wildcards allowed.</summary>
    [Parameter(Position = 1)]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(SnapshotNameCompleter))]
    public string[]? Name { get; set; }

    protected override void ProcessRecord()
    {
        if (Volume is null)
        {
            WriteAllPools();
            return;
        }

        foreach (VolumeReference reference in Volume)
        {
            RunForItem(reference, () => WriteSnapshots([ResolveVolume(reference)]));
        }
    }

    private void WriteAllPools()
    {
        var volumes = new List<StorageVolume>();
        foreach (string pool in KvmHost.ListFilePools().Select(p => p.Name))
        {
            RunForItem(pool, () => volumes.AddRange(KvmHost.ListVolumes(pool).Where(r => r.Volume is { ImageFormat: ImageFormat.Qcow2 }).Select(r => r.Volume!)));
        }

        RunForItem(Name, () => WriteSnapshots(volumes));
    }

    /// <summary>Writes the matching snapshots; a name without wildcards that matches nothing is an error.</summary>
    private void WriteSnapshots(List<StorageVolume> volumes)
    {
        var patterns = Name?.Select(n => new WildcardPattern(n, WildcardOptions.None)).ToList();
        var matched = new HashSet<string>(StringComparer.Ordinal);
        foreach (StorageVolume volume in volumes)
        {
            foreach (SnapshotInfo snapshot in volume.Snapshots)
            {
                if (Name is not null)
                {
                    var hits = Name.Where((_, i) => patterns![i].IsMatch(snapshot.Name)).ToList();
                    if (hits.Count == 0)
                    {
                        continue;
                    }

                    matched.UnionWith(hits);
                }

                WriteObject(Core.Volumes.VolumeSnapshot.From(volume, snapshot));
            }
        }

        foreach (string name in Name?.Where(n => !WildcardPattern.ContainsWildcardCharacters(n) && !matched.Contains(n)) ?? [])
        {
            string message = volumes.Count == 1 ? $"'{volumes[0].Path}' has no snapshot named '{name}'." : $"No volume has a snapshot named '{name}'.";
            WriteError(new KvmStorageException(ErrorKind.NotFound, ImageErrorIds.SnapshotNotFound, message, name), name);
        }
    }
}
