using System.Management.Automation;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.Volume;

/// <summary>Remove-Volume: deletes an image file from its pool, refusing one that other images or VMs use.</summary>
[Cmdlet(VerbsCommon.Remove, "Volume", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High, DefaultParameterSetName = ByName)]
[OutputType(typeof(void))]
public sealed class RemoveVolumeCommand : KvmCmdlet
{
    private const string ByName = "ByName";
    private const string ByObject = "ByObject";

    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ByName, ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(PoolNameCompleter))]
    public PoolReference Pool { get; set; } = null!;

    [Parameter(Mandatory = true, Position = 1, ParameterSetName = ByName, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(VolumeNameCompleter))]
    public string[] Name { get; set; } = [];

    /// <summary>Volumes as Get-Volume emits them.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByObject, ValueFromPipeline = true)]
    public StorageVolume[] InputObject { get; set; } = [];

    /// <summary>Remove even when another image uses this one as its backing file, or a VM has it attached.</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void ProcessRecord()
    {
        IEnumerable<(string? Pool, string Name)> targets = ParameterSetName == ByObject
            ? InputObject.Select(v => (v.Pool, v.Name))
            : Name.Select(n => ((string?)Pool.Name, n));
        foreach ((string? pool, string name) in targets)
        {
            RunForItem(name, () =>
            {
                if (pool is null)
                {
                    throw new Core.Errors.KvmStorageException(Core.Errors.ErrorKind.InvalidArgument, VolumeErrorIds.VolumeNotFound, $"'{name}' is not in a storage pool; Remove-Volume deletes pool volumes only.", name);
                }

                StorageVolume volume = KvmHost.GetVolume(pool, name);
                if (ShouldProcess($"{volume.Path} ({volume.Format.ToString().ToLowerInvariant()}, {Core.Sizes.ByteSize.Format(volume.Capacity)})", "Delete the volume's image file"))
                {
                    KvmHost.RemoveVolume(pool, name, Force);
                }
            });
        }
    }
}
