using System.Management.Automation;
using KvmStorage.Core.Access;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.Volume;

/// <summary>Remove-Volume: deletes an image file from its pool, refusing one that other images or VMs use.</summary>
[Cmdlet(VerbsCommon.Remove, "Volume", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High, DefaultParameterSetName = ByName)]
[OutputType(typeof(void))]
public sealed class RemoveVolumeCommand : KvmCmdlet
{
    private const string ByName = "ByName";
    private const string ByInput = "ByInput";

    /// <summary>The pool of the volumes named by -Name (or by strings piped in).</summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ByName)]
    [Parameter(ParameterSetName = ByInput)]
    [ArgumentCompleter(typeof(PoolNameCompleter))]
    public PoolReference Pool { get; set; } = null!;

    /// <summary>Names of the volumes in -Pool.</summary>
    [Parameter(Mandatory = true, Position = 1, ParameterSetName = ByName)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(VolumeNameCompleter))]
    public string[] Name { get; set; } = [];

    /// <summary>
    /// Objects from the pipeline, each naming one volume: a volume (Get-Volume), a VM disk (its image), a record with
    /// Pool and Name properties (Import-Csv), or a name string (with -Pool). A pool object, or a record naming a pool
    /// but no volume, is refused: nothing is ever read as "every volume of the pool".
    /// </summary>
    [Parameter(Mandatory = true, ParameterSetName = ByInput, ValueFromPipeline = true)]
    public PSObject[] InputObject { get; set; } = [];

    /// <summary>Remove even when another image uses this one as its backing file, or a VM has it attached.</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void ProcessRecord()
    {
        if (ParameterSetName == ByName)
        {
            foreach (string name in Name)
            {
                RemoveOne(new VolumeSpec.InPool(Pool.Name, name));
            }

            return;
        }

        foreach (PSObject input in InputObject)
        {
            RunForItem(input, () =>
            {
                VolumeInput.Item item = VolumeInput.Interpret(input, GetUnresolvedProviderPathFromPSPath);
                VolumeSpec spec = item switch
                {
                    { Volume: { } volume } => volume,
                    { Name: { } name } when MyInvocation.BoundParameters.ContainsKey(nameof(Pool)) => new VolumeSpec.InPool(Pool.Name, name),
                    { Name: { } name } => throw new KvmStorageException(ErrorKind.InvalidArgument, AccessErrorIds.VolumeNotNamed, $"'{name}' is a volume name without a pool; give -Pool.", name),
                    _ => throw new KvmStorageException(ErrorKind.InvalidArgument, AccessErrorIds.VolumeNotNamed, $"Pool '{item.Pool!.Name}' is not a volume: Remove-Volume never takes a pool for all its volumes (Remove-StoragePool removes a pool).", item.Pool!.Name),
                };
                RemoveOne(spec);
            });
        }
    }

    private void RemoveOne(VolumeSpec spec)
    {
        RunForItem(spec.ToString(), () =>
        {
            // Prepared first: what the real run would refuse (attached, a backing file, in use) is refused here,
            // so neither -WhatIf nor -Confirm offers a delete that cannot happen.
            VolumeAction<bool> remove = Volumes.Remove(spec, Force);
            if (ShouldProcess(remove.Target, remove.Description))
            {
                remove.Run(null, CancellationToken);
            }
        });
    }
}
